"""torchrun with 2 CPU processes (gloo): training, evaluation, result gathering, a failing rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lavislite.common import dist
from lavislite.train import run
from tests.helpers.runners import REPO, project, weights


def torchrun(cfg: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lavislite.train", "--cfg-path", str(cfg), *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def only_run_dir(root: Path) -> Path:
    dirs = [p for p in root.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


# -- single-process behaviour of the helpers ----------------------------------------------------
def test_helpers_without_a_process_group():
    assert not dist.is_dist_initialized()
    assert (dist.get_rank(), dist.get_world_size(), dist.is_main_process()) == (0, 1, True)
    dist.barrier()  # a no-op, not "default process group has not been initialized"
    assert dist.all_gather_object({"a": 1}) == [{"a": 1}]
    assert dist.broadcast_object("run-id") == "run-id"
    assert dist.init_distributed(None) is False


def test_interleave_and_dedupe_restore_dataset_order():
    # 5 samples on 2 ranks: rank 0 gets 0,2,4 ; rank 1 gets 1,3 and the padding sample 0
    per_rank = [[{"id": 0}, {"id": 2}, {"id": 4}], [{"id": 1}, {"id": 3}, {"id": 0}]]
    merged = dist.dedupe(dist._interleave(per_rank), "id")
    assert [r["id"] for r in merged] == [0, 1, 2, 3, 4]
    with pytest.raises(Exception, match="no id key 'instance_id'"):
        dist.dedupe([{"id": 1}], "instance_id")


# -- two processes --------------------------------------------------------------------------------
def test_torchrun_training_and_evaluation_match_single_process(tmp_path):
    keys = dict(max_epoch=2, batch_size_train=8, checkpoint_every_steps=5)
    single = run(str(project(tmp_path / "single", **keys)), ["model.dropout=0.0"])

    # 2 ranks x 4 samples per step = the same global batches as 1 x 8 (DistributedSampler splits one permutation)
    t0 = time.time()
    done = torchrun(project(tmp_path / "ddp", **{**keys, "batch_size_train": 4}), "--options", "model.dropout=0.0")
    train_s = time.time() - t0
    assert done.returncode == 0, done.stderr[-4000:]
    run_dir = only_run_dir(tmp_path / "ddp" / "out" / "toy")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == single["steps"] == 16
    a, b = weights(single["run_dir"]), weights(run_dir)
    for k in a:
        if k != "running_mean":  # per-rank buffer; DDP broadcasts rank 0's
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    for split in ("val", "test"):
        assert summary["metrics"][split]["n"] == summary["metrics"][split]["n_unique"] == {"val": 24, "test": 21}[split]
        assert summary["metrics"][split]["mse"] == pytest.approx(single["metrics"][split]["mse"], rel=1e-3)
    assert len(list((tmp_path / "ddp" / "out").rglob("log.txt"))) == 1  # rank 0 writes the outputs

    # evaluation of the same weights by one process: exactly the 2-process metrics (every sample once)
    preds = json.loads((run_dir / "result" / f"test_epoch{summary['best_epoch']}.json").read_text())
    assert [p["instance_id"] for p in preds] == [f"test-{i}" for i in range(21)]  # gathered in dataset order
    ev = run(str(project(tmp_path / "ev", batch_size_eval=4)), evaluate=True, resume=str(run_dir / "checkpoint_best.pth"))
    # (per-sample float results depend on the batch composition in BLAS, hence approx)
    assert ev["metrics"]["test"] == pytest.approx(summary["metrics"]["test"], rel=1e-6)
    print(f"torchrun 2-process training took {train_s:.1f}s")


def test_a_failing_rank_ends_the_run_and_is_named(tmp_path):
    cfg = project(tmp_path, max_epoch=50, toy_fail_rank=1, toy_fail_step=3, dist_timeout_s=20, batch_size_train=4)
    t0 = time.time()
    done = torchrun(cfg, timeout=90)
    elapsed = time.time() - t0
    assert done.returncode != 0
    assert "lavislite: rank 1/2 failed: RuntimeError: toy failure" in done.stderr
    assert "rank 0/2 failed" not in done.stderr  # rank 0 only lost its peer
    assert elapsed < 60, f"took {elapsed:.0f}s"
