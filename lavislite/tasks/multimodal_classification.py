"""Multimodal classification (NLVR2): ``model.predict`` -> accuracy.

Evaluation writes ``<output_dir>/<split>_predictions.json`` (``[{"instance_id", "prediction",
"target"}]``) and reports ``acc`` (percent, = ``agg_metrics``) when the split has labels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from lavislite.common.errors import DataError
from lavislite.common.registry import registry
from lavislite.common.utils import write_json
from lavislite.tasks._common import plain_id, unwrap
from lavislite.tasks.base_task import BaseTask

logger = logging.getLogger(__name__)


@registry.register_task("multimodal_classification")
class MultimodalClassificationTask(BaseTask):
    """Train with cross-entropy (``model(samples)``); evaluate with ``model.predict(samples)``."""

    RUN_DEFAULTS: ClassVar[dict] = {}
    select_metric = "agg_metrics"
    result_id_key = "instance_id"

    def valid_step(self, model: nn.Module, samples: dict[str, Any]) -> list[dict]:
        out = unwrap(model).predict(samples)
        preds = out["predictions"]
        targets = out.get("targets")
        ids = samples.get("instance_id")
        if ids is None:
            raise DataError("multimodal classification needs samples['instance_id'] (unique per sample) from the dataset's collater")
        preds = preds.tolist() if isinstance(preds, torch.Tensor) else list(preds)
        targets = targets.tolist() if isinstance(targets, torch.Tensor) else ([None] * len(preds) if targets is None else list(targets))
        return [{"instance_id": plain_id(i), "prediction": p, "target": t} for i, p, t in zip(ids, preds, targets)]

    def after_evaluation(self, results: list[dict], split: str, output_dir: Path | None, epoch: Any) -> dict[str, Any]:
        if output_dir is not None:
            write_json(Path(output_dir) / f"{split}_predictions.json", results)
        if not results or any(r["target"] is None for r in results):
            return {"num_predictions": len(results)}
        from lavislite.metrics import accuracy

        acc = accuracy([r["prediction"] for r in results], [r["target"] for r in results])
        return {"agg_metrics": acc, "acc": acc}
