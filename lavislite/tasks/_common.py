"""Small pieces the BLIP tasks share: the model behind a DDP wrapper, the dataset behind an evaluation
loader, JSON-friendly sample ids, and handing training progress to heads that ramp a weight over the
first epochs."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from lavislite.common.errors import ConfigError


def unwrap(model: Any) -> Any:
    """The bare model behind a DDP wrapper (its task methods live there)."""
    return getattr(model, "module", model)


def loader_dataset(data_loader: Any, split: str, *, needs: tuple[str, ...] = ()) -> Dataset:
    """The dataset behind ``data_loader``; raise if it lacks one of the attributes in ``needs``."""
    dataset = getattr(data_loader, "dataset", None)
    if dataset is None:
        raise ConfigError(f"split {split!r}: the evaluation loader has no .dataset; pass a torch DataLoader")
    if isinstance(dataset, ConcatDataset) and len(dataset.datasets) == 1:
        dataset = dataset.datasets[0]
    missing = [n for n in needs if not hasattr(dataset, n)]
    if missing:
        raise ConfigError(
            f"split {split!r}: dataset {type(dataset).__name__} has no {', '.join(missing)}; this task needs an "
            f"evaluation dataset that exposes {', '.join(needs)} (see docs/datasets.md)"
        )
    return dataset


def plain_id(v: Any) -> Any:
    """A sample id as a JSON-friendly scalar (tensor -> int, numeric strings stay strings)."""
    if isinstance(v, torch.Tensor):
        return v.item()
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        return v.item()
    return v


class TrainProgressMixin:
    """Adds LAVIS's ``epoch``/``iters``/``num_iters_per_epoch`` to training samples when known.

    Heads that ramp a weight over the first epochs (BLIP's ITC distillation ``alpha``) read these keys
    from ``samples``. A runner that knows the position calls :meth:`set_train_progress` before each
    step; without it the samples are passed unchanged and the head uses its full weight.
    """

    _progress: tuple[int, int, int] | None = None

    def set_train_progress(self, epoch: int, iters: int, num_iters_per_epoch: int) -> None:
        self._progress = (int(epoch), int(iters), int(num_iters_per_epoch))

    def with_progress(self, samples: dict) -> dict:
        if self._progress is None or "epoch" in samples:
            return samples
        epoch, iters, per_epoch = self._progress
        return {**samples, "epoch": epoch, "iters": iters, "num_iters_per_epoch": per_epoch}
