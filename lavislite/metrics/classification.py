"""Plain accuracy (NLVR2, exact-match QA)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from lavislite.common.errors import DataError

__all__ = ["accuracy"]


def _as_1d(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    if arr.ndim != 1:
        raise DataError(
            f"accuracy: {name} must be a flat sequence of labels, got shape {arr.shape}; "
            "pass argmax'd class ids, not logits"
        )
    return arr


def accuracy(preds: Sequence | np.ndarray | torch.Tensor, labels: Sequence | np.ndarray | torch.Tensor) -> float:
    """Percentage (0-100) of positions where ``preds[i] == labels[i]``.

    Works for class ids (NLVR2: ``argmax == label``, as BLIP and LAVIS report it, ×100) and for strings.
    """
    p, t = _as_1d(preds, "preds"), _as_1d(labels, "labels")
    if len(p) == 0:
        raise DataError("accuracy: no predictions; there is nothing to evaluate")
    if len(p) != len(t):
        raise DataError(f"accuracy: {len(p)} predictions but {len(t)} labels; they must pair up one to one")
    return float(100.0 * np.mean(p == t))
