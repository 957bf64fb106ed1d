"""Kill-and-resume: a resumed run ends with exactly the weights and metrics of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lavislite.common.errors import CheckpointError
from lavislite.train import run
from tests.helpers.runners import REPO, project, weights


def records(run_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a: dict, b: dict) -> None:
    wa, wb = weights(a["run_dir"]), weights(b["run_dir"])
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert a["metrics"] == b["metrics"] and a["best_metric"] == b["best_metric"] and a["train"] == b["train"]
    assert records(a["run_dir"]) == records(b["run_dir"])
    for name in ("val_metrics.json", "test_metrics.json"):
        assert (Path(a["run_dir"]) / name).read_text() == (Path(b["run_dir"]) / name).read_text()
    ca = torch.load(Path(a["run_dir"]) / "checkpoint_latest.pth", weights_only=True)
    cb = torch.load(Path(b["run_dir"]) / "checkpoint_latest.pth", weights_only=True)
    assert ca["progress"] == cb["progress"]
    assert str(ca["optimizer"]["state"]) == str(cb["optimizer"]["state"])


@pytest.mark.parametrize(
    "runner_keys, fail_at",
    [
        (dict(runner="runner_base", max_epoch=3), 14),  # crash mid epoch 1 (checkpoint at step 12)
        (dict(runner="runner_base", max_epoch=3, accum_grad_iters=3), 11),  # accumulation groups across the crash
        (dict(runner="runner_iter", max_iters=20, iters_per_inner_epoch=7), 17),  # inner epochs cross data passes
    ],
)
def test_crash_and_resume_is_exact(tmp_path, runner_keys, fail_at):
    keys = dict(checkpoint_every_steps=3, **runner_keys)
    full = run(str(project(tmp_path / "a", **keys)))
    with pytest.raises(RuntimeError, match="toy failure"):
        run(str(project(tmp_path / "b", toy_fail_rank=0, toy_fail_step=fail_at, **keys)))
    latest = next((tmp_path / "b" / "out" / "toy").glob("*/checkpoint_latest.pth"))
    assert torch.load(latest, weights_only=True)["progress"]["step"] < full["steps"]
    resumed = run(str(project(tmp_path / "b", **keys)), resume="auto")
    assert resumed["run_dir"] == str(latest.parent)  # continues in the same run directory
    assert_same_run(full, resumed)


def test_resume_from_an_epoch_end_checkpoint(tmp_path):
    full = run(str(project(tmp_path / "a")))
    with pytest.raises(RuntimeError):
        run(str(project(tmp_path / "b", toy_fail_rank=0, toy_fail_step=17)))  # epoch 2's first step
    latest = next((tmp_path / "b" / "out" / "toy").glob("*/checkpoint_latest.pth"))
    assert torch.load(latest, weights_only=True)["progress"]["epoch"] == 2
    assert_same_run(full, run(str(project(tmp_path / "b")), resume=str(latest)))


def test_sigkill_and_resume(tmp_path):
    """A real process killed with SIGKILL as soon as a checkpoint exists; --resume auto continues it."""
    keys = dict(checkpoint_every_steps=2, toy_step_sleep=0.02, max_epoch=3)
    full = run(str(project(tmp_path / "a", **keys)))
    cfg = project(tmp_path / "b", **keys)
    # The child must reduce floats exactly as this process does: same intra-op thread count (other tests
    # change this process's count, and the CI machine may have more cores than the test process uses).
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, "-m", "lavislite.train", "--cfg-path", str(cfg)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = tmp_path / "b" / "out" / "toy"
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("*/checkpoint_latest.pth")) and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    latest = next(out.glob("*/checkpoint_latest.pth"))
    assert torch.load(latest, weights_only=True)["progress"]["step"] < full["steps"]
    done = subprocess.run(cmd + ["--resume", "auto"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = json.loads((latest.parent / "summary.json").read_text())
    assert_same_run(full, resumed)


def test_resume_rejects_a_checkpoint_of_another_model(tmp_path):
    trained = run(str(project(tmp_path, max_epoch=1, test_splits=[], valid_splits=[])))
    latest = Path(trained["run_dir"]) / "checkpoint_latest.pth"
    with pytest.raises(CheckpointError, match=r"does not fit.*proj.weight"):
        run(str(project(tmp_path, max_epoch=2)), ["model.dim=4"], resume=str(latest))


def test_resume_rejects_a_weights_file(tmp_path):
    trained = run(str(project(tmp_path, max_epoch=1, test_splits=[])))
    with pytest.raises(CheckpointError, match="weights file, not a training checkpoint"):
        run(str(project(tmp_path)), resume=str(Path(trained["run_dir"]) / "checkpoint_best.pth"))


def test_resume_auto_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint_latest.pth"):
        run(str(project(tmp_path)), resume="auto")
