"""The command line in fresh processes: a plain subprocess run and a torchrun 2-process sharded caption run."""

import json
import os
import re
import subprocess
import sys

from tests.helpers.inference import write_images

FAST = ["--max-length", "8", "--min-length", "2", "--beams", "2", "--batch-size", "2", "-q"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", LAVISLITE_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    return env


def test_subprocess_smoke(tmp_path, model_args):
    write_images(tmp_path / "imgs", 2)
    proc = subprocess.run([sys.executable, "-m", "lavislite", "caption", str(tmp_path / "imgs"), "--format", "table",
                           "--max-length", "8", "--min-length", "2", "--beams", "2", *model_args("blip_caption")],
                          capture_output=True, text=True, timeout=240, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == ["id", "caption"] and len(proc.stdout.splitlines()) == 4
    assert "lavislite caption: 2 new" in proc.stderr


def test_torchrun_two_ranks_each_image_once(tmp_path, model_args):
    imgs = write_images(tmp_path / "imgs", 7)
    out = tmp_path / "caps.jsonl"
    # a previous run already did two images: nobody recomputes them, whatever the earlier world size
    pre = [{"id": os.path.normpath(imgs[i]), "caption": "PREVIOUS"} for i in (0, 3)]
    out.write_text("".join(json.dumps(r) + "\n" for r in pre))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0", "--rdzv-backend=c10d",
           "--rdzv-endpoint=localhost:0", "-m", "lavislite", "caption", str(tmp_path / "imgs"), "-o", str(out),
           "--device", "cpu", *[a for a in FAST if a != "-q"], *model_args("blip_caption")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == [os.path.normpath(p) for p in imgs]  # merged, input order, each once
    assert [r["caption"] for r in recs if r["caption"] == "PREVIOUS"] == ["PREVIOUS"] * 2
    assert recs[0]["caption"] == "PREVIOUS" and recs[3]["caption"] == "PREVIOUS"
    assert not list(tmp_path.glob("caps.rank*.jsonl"))  # parts merged and removed
    # both ranks worked on their share of the 5 remaining images (0..6 by index: rank 0 -> 2,4,6; rank 1 -> 1,5);
    # "already in" counts what the rank saw done when it started, which may include the other rank's first batch
    assert re.search(r"rank 0/2 3 new, \d+ already in", proc.stderr), proc.stderr[-2000:]
    assert re.search(r"rank 1/2 2 new, \d+ already in", proc.stderr), proc.stderr[-2000:]
