"""Training survives faults: kill -9 *during a checkpoint write*, a disk that fills up mid-run, a rank that is
SIGKILLed under torchrun. (Kill-at-a-step + exact resume, unwritable output dirs and a rank that raises are
covered by tests/runners; these tests add the cases that need a hard kill or a real write failure.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from lavislite.common import checkpoint as checkpoint_mod
from lavislite.common.checkpoint import CheckpointWriteError, atomic_save
from lavislite.common.errors import CheckpointError
from lavislite.runners import checkpointing
from lavislite.train import run
from tests.helpers.runners import REPO, project, weights

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
KEYS = dict(checkpoint_every_steps=2, max_epoch=2, test_splits=[])

# Runs lavislite.train; the N-th training-state save writes half the file and then the process SIGKILLs itself.
_DIE_WHILE_SAVING = textwrap.dedent("""
    import os, signal, sys, torch
    from pathlib import Path
    from lavislite.common import checkpoint
    cfg, nth, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(int(sys.argv[4]))  # the parent's thread count: same float reductions, bitwise-equal runs
    real_save, saves = torch.save, [0]
    def dying_save(obj, f, *a, **k):
        if isinstance(obj, dict) and "progress" in obj:
            saves[0] += 1
            if saves[0] == nth:
                real_save(obj, f, *a, **k)
                data = Path(f).read_bytes()
                Path(f).write_bytes(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *a, **k)
    torch.save = dying_save
    if mode == "unprotected":  # mutation: save straight onto the final name
        checkpoint.atomic_save = lambda obj, path: (torch.save(obj, path), Path(path))[1]
    from lavislite.train import main
    sys.exit(main(["--cfg-path", cfg]))
""")


def _die_while_saving(cfg: Path, nth: int, mode: str) -> Path:
    done = subprocess.run([sys.executable, "-c", _DIE_WHILE_SAVING, str(cfg), str(nth), mode, str(torch.get_num_threads())], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    return next((cfg.parent / "out" / "toy").glob("*/checkpoint_latest.pth"))


def test_kill_9_during_a_checkpoint_write_then_resume_is_exact(tmp_path):
    full = run(str(project(tmp_path / "a", **KEYS)))
    cfg = project(tmp_path / "b", **KEYS)
    latest = _die_while_saving(cfg, nth=3, mode="protected")
    state = torch.load(latest, weights_only=True)  # the previous (2nd) checkpoint, whole
    assert 0 < state["progress"]["step"] < full["steps"]
    assert [p.name for p in latest.parent.iterdir() if p.name.endswith(".tmp")]  # the dead temp file, never renamed
    resumed = run(str(cfg), resume="auto")
    assert resumed["run_dir"] == str(latest.parent)
    wa, wb = weights(full["run_dir"]), weights(resumed["run_dir"])
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed["metrics"] == full["metrics"] and resumed["best_metric"] == full["best_metric"]
    assert resumed["train"] == full["train"]


@pytest.mark.slow  # ~10 s; the in-process mutation check below covers the same protection by default
def test_mutation_a_non_atomic_save_killed_mid_write_breaks_resume(tmp_path):
    cfg = project(tmp_path, **KEYS)
    _die_while_saving(cfg, nth=3, mode="unprotected")
    with pytest.raises(CheckpointError, match="checkpoint_latest.pth"):
        run(str(cfg), resume="auto")  # the half-written file is all there is


def test_a_full_disk_during_a_checkpoint_write_is_a_clear_error_and_keeps_the_old_file(tmp_path):
    """A real write failure: the file-size limit makes write() fail with EFBIG, as a full disk does (ENOSPC)."""
    import resource

    path = tmp_path / "checkpoint_latest.pth"
    atomic_save({"step": 1, "w": torch.zeros(10)}, path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(CheckpointWriteError) as err:
            atomic_save({"step": 2, "w": torch.zeros(500_000)}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    msg = str(err.value)
    assert str(path) in msg and "MiB free" in msg and "previous" in msg
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_latest.pth"]  # no temp file left behind


def test_write_failure_keeps_the_previous_checkpoint_in_process(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_latest.pth"
    atomic_save({"step": 1}, path)
    real_save = torch.save

    def half_then_enospc(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        Path(f).write_bytes(Path(f).read_bytes()[:50])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_enospc)
    with pytest.raises(CheckpointWriteError, match=r"checkpoint_latest\.pth.*No space left"):
        checkpointing.save_training_state(path, model=torch.nn.Linear(2, 2), optimizer=None, scheduler=None, scaler=None,
                                          progress=checkpointing.Progress(), rng=[])
    assert torch.load(path, weights_only=True) == {"step": 1}
    # mutation check: writing in place, the same failure destroys the previous checkpoint
    monkeypatch.setattr(checkpoint_mod, "atomic_save", lambda obj, p: torch.save(obj, p))
    with pytest.raises(OSError):
        checkpointing.save_training_state(path, model=torch.nn.Linear(2, 2), optimizer=None, scheduler=None, scaler=None,
                                          progress=checkpointing.Progress(), rng=[])
    monkeypatch.undo()
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)


@pytest.mark.slow  # ~25 s on 2 cores; tests/runners covers a rank that raises, by default
def test_a_sigkilled_rank_ends_the_run_quickly_and_is_named(tmp_path):
    """torchrun + gloo: rank 1 is SIGKILLed (no Python handler runs); rank 0 must not hang."""
    plugin = tmp_path / "rel_killer.py"
    plugin.write_text(textwrap.dedent("""
        import os, signal
        from lavislite.common.registry import registry
        from tests.helpers.runner_toys import ToyTask

        @registry.register_task("rel_sigkill_task", force=True)
        class SigkillTask(ToyTask):
            def train_step(self, model, samples):
                if os.environ.get("RANK") == "1" and self.calls >= 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().train_step(model, samples)
    """))
    cfg = project(tmp_path, task="rel_sigkill_task", imports=["tests.helpers.runner_toys", "rel_killer"], max_epoch=50,
                  batch_size_train=4, dist_timeout_s=20, toy_step_sleep=0.01)
    env = {**ENV, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lavislite.train", "--cfg-path", str(cfg)]
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "rank      : 1" in out or "rank: 1" in out, out[-4000:]  # torchrun's failure summary names the dead rank
    assert "SIGKILL" in out or "exitcode  : -9" in out, out[-4000:]
    assert elapsed < 90, f"took {elapsed:.0f}s"
