"""Evaluate one split: every rank runs its shard, results are gathered over the process group and
de-duplicated, rank 0 scores them (``task.after_evaluation``) and the metrics reach every rank."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from lavislite.common import dist
from lavislite.common.errors import ConfigError

logger = logging.getLogger(__name__)


def evaluate_split(
    task: Any, model: nn.Module, loader: DataLoader, split: str, run_dir: Path | None, epoch: Any
) -> dict[str, float]:
    """Metrics of ``split``; also written to ``<run_dir>/<split>_metrics.json`` by rank 0."""
    model.eval()
    results = task.evaluation(model, loader, split)
    if results is None:
        raise ConfigError(f"{type(task).__name__}.evaluation returned None for split {split!r}; it must return a list of result dicts")
    merged = dist.gather_results(results, getattr(task, "result_id_key", "instance_id"))
    metrics: dict[str, float] | None = None
    error: str | None = None
    if dist.is_main_process():
        try:
            metrics = task.after_evaluation(merged, split, run_dir, epoch) or {}
            write_split_metrics(run_dir, split, epoch, metrics, len(merged))
        except Exception as exc:  # tell the other ranks instead of leaving them at the broadcast
            error = f"{type(exc).__name__}: {exc}"
            if not dist.is_dist_initialized():
                raise
            logger.exception("after_evaluation failed on split %s", split)
    metrics, error = dist.broadcast_object((metrics, error))
    if error:
        raise RuntimeError(f"scoring split {split!r} failed on rank 0: {error}")
    logger.info("%s (epoch %s, %d samples): %s", split, epoch, len(merged), _fmt(metrics))
    return dict(metrics)


def write_split_metrics(run_dir: Path | None, split: str, epoch: Any, metrics: dict[str, Any], n: int) -> None:
    if run_dir is None:
        return
    path = Path(run_dir) / f"{split}_metrics.json"
    data = {"split": split, "epoch": epoch, "num_samples": n, "metrics": metrics}
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=float) + "\n", encoding="utf-8")


def _fmt(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(metrics.items()))
