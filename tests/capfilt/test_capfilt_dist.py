"""CapFilt under torchrun: 2 CPU ranks killed mid-way and restarted give the bytes of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import yaml

from lavislite.capfilt import load_config, run
from tests.helpers.capfilt import config, tree_bytes, write_shard

N_SHARDS = 6


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", LAVISLITE_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    return env


def _cmd(cfg_path):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
            "-m", "lavislite", "capfilt", "--cfg-path", str(cfg_path), "-q"]


def test_killed_two_rank_run_restarts_to_identical_output(tmp_path, models):
    shards = [str(write_shard(tmp_path / "web" / f"{i:03d}.tar", 4, seed=i, corrupt=(1,) if i == 3 else ())) for i in range(N_SHARDS)]
    (tmp_path / "web" / "006.tar").write_bytes(b"broken")  # an unreadable shard: reported, the others go on
    shards.append(str(tmp_path / "web" / "006.tar"))

    def write_cfg(name):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"capfilt": config(tmp_path, models["tok"], models["cap"], models["itm"], shards, tmp_path / name,
                                                          generation__max_length=12)}))
        return path

    # uninterrupted, one process (in this one: the output does not depend on the number of ranks)
    run(load_config(write_cfg("ref")))

    # two ranks, killed (SIGKILL to the whole process group) once the first shard is complete
    killed_cfg = write_cfg("killed")
    proc = subprocess.Popen(_cmd(killed_cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), start_new_session=True)
    stats_dir = tmp_path / "killed" / "stats"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not (stats_dir.is_dir() and any(stats_dir.glob("*.json"))):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    done_at_kill = sorted(p.name for p in stats_dir.glob("*.json"))
    assert 1 <= len(done_at_kill) < N_SHARDS + 1, done_at_kill  # killed mid-way
    assert not (tmp_path / "killed" / "summary.json").exists()

    again = subprocess.run(_cmd(killed_cfg), check=False, capture_output=True, text=True, timeout=300, env=_env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert tree_bytes(tmp_path / "killed") == tree_bytes(tmp_path / "ref")
    summary = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert summary["corrupt"][0]["shard"] == "003" and summary["unreadable_shards"][0]["shard"] == "006"
    assert summary["images"] == 4 * N_SHARDS and summary["missing_shards"] == []
