"""Training checkpoints: everything needed to continue a run exactly, written atomically.

``checkpoint_latest.pth`` holds::

    model      the FULL state dict (momentum encoders, queues, every persistent buffer)
    optimizer, scheduler, scaler
    progress   epoch, iteration in the epoch, optimizer step, data position, best metric, meters
    rng        per rank: python, numpy, torch CPU and CUDA generator states
    config     the merged run config (yaml text) for reference

It is read with ``weights_only=True`` (no pickled code runs), and the weights go through
:func:`lavislite.common.checkpoint.load_checkpoint` like every other checkpoint, with ``strict=True``: the
state came from this very model class, so a missing key is a real error (LAVIS #153 resumed non-strictly
from files that lacked frozen/momentum weights and failed). The one documented exception is a buffer the
model rebuilds on construction (``embeddings.position_ids``), which ``load_checkpoint`` ignores.
``checkpoint_best.pth`` is ``{"model": state_dict, "epoch", "metric"}``, loadable by ``load_checkpoint``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lavislite.common import checkpoint as common_checkpoint
from lavislite.common.errors import CheckpointError

logger = logging.getLogger(__name__)

LATEST = "checkpoint_latest.pth"
BEST = "checkpoint_best.pth"
FORMAT_VERSION = 1


@dataclass
class Progress:
    """Where a run is. ``epoch``/``iter_in_epoch`` index the next iteration to run."""

    epoch: int = 0
    iter_in_epoch: int = 0
    step: int = 0  # optimizer updates done
    data_epoch: int = 0  # passes over the train loader started (sampler epoch)
    data_batch: int = 0  # batches of that pass already consumed
    best_metric: float | None = None
    best_epoch: int | None = None
    meter: dict[str, float] = field(default_factory=dict)  # running sums since the last log line
    epoch_meter: dict[str, float] = field(default_factory=dict)  # running sums over this epoch
    valid_metrics: dict[str, Any] = field(default_factory=dict)  # latest metrics per validation split

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "Progress":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# -- RNG --------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """Every global RNG state, in tensors and plain types only (so ``weights_only`` loading works)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": _py_state_to_plain(random.getstate()),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_py_state_from_plain(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
        else:
            logger.warning(
                "checkpoint has %d CUDA RNG states, this machine %d devices: CUDA RNG not restored", len(states), torch.cuda.device_count()
            )


def _py_state_to_plain(s: tuple) -> list:
    version, internal, gauss = s
    return [version, list(internal), gauss]


def _py_state_from_plain(s: list) -> tuple:
    version, internal, gauss = s
    return (version, tuple(internal), gauss)


# -- save / load ------------------------------------------------------------------------------
def save_training_state(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    scaler: Any,
    progress: Progress,
    rng: list[dict[str, Any]],
    config_yaml: str = "",
) -> Path:
    """Write ``checkpoint_latest.pth`` (temp file + fsync + rename: a crash never leaves half a file)."""
    state = {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "progress": progress.state_dict(),
        "rng": rng,  # one capture_rng() per rank, in rank order
        "config": config_yaml,
    }
    return common_checkpoint.atomic_save(state, Path(path))


def save_best(path: Path, model: nn.Module, epoch: int, metric: float) -> Path:
    return common_checkpoint.atomic_save({"model": model.state_dict(), "epoch": epoch, "metric": float(metric)}, Path(path))


def read(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"resume checkpoint {path} does not exist; give run.resume_ckpt_path an existing checkpoint_latest.pth or use --resume auto"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from lavislite.common.checkpoint import is_unsafe_pickle_error, refusal_message

        if is_unsafe_pickle_error(exc):
            raise CheckpointError(refusal_message(path)) from exc
        raise CheckpointError(f"cannot read {path}: {exc}. The file is corrupt or not a lavislite checkpoint.") from exc


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load of a checkpoint written from this model class (see the module docstring); a state that
    does not fit exactly leaves the model untouched and raises, naming ``source`` and the keys at fault."""
    try:
        common_checkpoint.load_checkpoint(model, state, strict=True)
    except CheckpointError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = "; ".join(lines[1:-1] if len(lines) > 2 else lines)  # the key lists, without load_checkpoint's own advice
        raise CheckpointError(
            f"{source} does not fit the model {type(model).__name__}: {detail}. A resume checkpoint must come from the "
            f"same model config; to start from other weights use model.checkpoint instead of run.resume_ckpt_path."
        ) from exc


def load_training_state(
    path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer | None, scheduler: Any, scaler: Any
) -> tuple[Progress, list[dict[str, Any]]]:
    """Restore model/optimizer/scheduler/scaler from ``path``; returns the progress and per-rank RNG states.

    The caller restores RNG itself, as the last thing before the loop, so that setup work done after
    loading (building loaders) cannot shift the random streams.
    """
    ckpt = read(path)
    if not isinstance(ckpt, dict) or "progress" not in ckpt or "model" not in ckpt:
        raise CheckpointError(
            f"{path} is a weights file, not a training checkpoint (no 'progress'). To start from its weights set "
            f"model.checkpoint={path}; to resume give a checkpoint_latest.pth"
        )
    load_model_state(model, ckpt["model"], path)
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler") is not None:
        scaler.load_state_dict(ckpt["scaler"])
    return Progress.from_state_dict(ckpt["progress"]), ckpt["rng"]


def find_latest(run_root: Path) -> Path:
    """The newest ``checkpoint_latest.pth`` under ``<output_dir>/<run_name>/*/`` (for ``--resume auto``)."""
    found = sorted(Path(run_root).glob(f"*/{LATEST}"), key=lambda p: (p.stat().st_mtime, str(p)))
    if not found:
        raise CheckpointError(f"--resume auto: no {LATEST} under {run_root}/*/; train first or give the checkpoint path")
    return found[-1]
