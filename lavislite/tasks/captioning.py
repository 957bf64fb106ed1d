"""Image captioning (COCO Karpathy, NoCaps): beam-search captions, COCO caption metrics.

Evaluation writes ``<output_dir>/<split>_captions.json`` in the COCO results format
(``[{"image_id": ..., "caption": ...}]``). With ``run.report_metric`` it scores them against the
dataset's reference captions (``dataset.gt_file``) with BLEU-1..4, METEOR, ROUGE-L, CIDEr and SPICE
(SPICE needs Stanford CoreNLP; offline it is reported as unavailable, not an error).
``agg_metrics`` = CIDEr + Bleu_4 (as LAVIS) selects the best checkpoint. NoCaps has no public
references: ``report_metric: false`` writes the captions for the evaluation server only.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.common.utils import write_json
from lavislite.models.protocols import Captioner
from lavislite.tasks._common import loader_dataset, plain_id, unwrap
from lavislite.tasks.base_task import BaseTask

logger = logging.getLogger(__name__)


@registry.register_task("captioning")
class CaptionTask(BaseTask):
    """Train with the LM loss (``model(samples)``); evaluate with ``model.generate``."""

    RUN_DEFAULTS: ClassVar[dict] = {
        "num_beams": 3,  # BLIP: beam 3, max 20, min 5 (lengths count the 4 prompt tokens)
        "max_len": 20,
        "min_len": 5,
        "repetition_penalty": 1.0,  # eval_nocaps.py uses 1.1
        "use_nucleus_sampling": False,
        "report_metric": True,  # false: write captions only (NoCaps test server)
        "spice": True,  # try SPICE (needs CoreNLP jars; unavailable offline -> reported, not fatal)
    }
    select_metric = "agg_metrics"
    result_id_key = "image_id"
    requires = (Captioner,)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._gt_files: dict[str, Any] = {}

    # -- evaluation -------------------------------------------------------------------------------
    def evaluation(self, model: nn.Module, data_loader: Any, split: str) -> list[dict]:
        if self.run_key("report_metric"):
            self._gt_files[split] = getattr(loader_dataset(data_loader, split), "gt_file", None)
        return super().evaluation(model, data_loader, split)

    def valid_step(self, model: nn.Module, samples: dict[str, Any]) -> list[dict]:
        captions = unwrap(model).generate(
            samples,
            use_nucleus_sampling=bool(self.run_key("use_nucleus_sampling")),
            num_beams=int(self.run_key("num_beams")),
            max_length=int(self.run_key("max_len")),
            min_length=int(self.run_key("min_len")),
            repetition_penalty=float(self.run_key("repetition_penalty")),
        )
        ids = samples.get("image_id")
        if ids is None:
            raise DataError("captioning evaluation needs samples['image_id'] (one id per image) from the dataset's collater")
        return [{"image_id": plain_id(i), "caption": c} for i, c in zip(ids, captions)]

    def after_evaluation(self, results: list[dict], split: str, output_dir: Path | None, epoch: Any) -> dict[str, Any]:
        if output_dir is not None:
            path = write_json(Path(output_dir) / f"{split}_captions.json", results)
            logger.info("wrote %d captions to %s", len(results), path)
        if not self.run_key("report_metric"):
            return {"num_captions": len(results)}
        gt_file = self._gt_files.get(split)
        if not gt_file:
            raise ConfigError(
                f"split {split!r}: run.report_metric is true but the dataset has no gt_file (reference captions); "
                f"add the split's *_gt.json to the dataset's build_info, or set run.report_metric=false"
            )
        from lavislite.metrics import coco_caption_scores

        gts = load_caption_gts(gt_file)
        res = {r["image_id"]: r["caption"] for r in results}
        scores = coco_caption_scores(gts, res, spice=bool(self.run_key("spice")))
        metrics: dict[str, Any] = {k: v for k, v in scores.items()}
        metrics["agg_metrics"] = float(scores["CIDEr"]) + float(scores["Bleu_4"])
        return metrics


def load_caption_gts(gt_file: str | Path) -> dict[Any, list[str]]:
    """Reference captions per image id from a COCO-format file (``{"annotations": [{"image_id",
    "caption"}]}``, BLIP's ``coco_karpathy_*_gt.json``), a list of such records, or ``{id: [captions]}``."""
    path = Path(gt_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"reference caption file {path} does not exist; download it or fix the dataset's gt path") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"reference caption file {path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    gts: dict[Any, list[str]] = defaultdict(list)
    if isinstance(data, dict):
        for k, caps in data.items():
            gts[k].extend([caps] if isinstance(caps, str) else list(caps))
    elif isinstance(data, list):
        for i, rec in enumerate(data):
            if not isinstance(rec, dict) or "image_id" not in rec or "caption" not in rec:
                raise DataError(f"{path}: record {i} is not {{'image_id', 'caption'}} (got {rec!r:.100})")
            caps = rec["caption"]
            gts[rec["image_id"]].extend([caps] if isinstance(caps, str) else list(caps))
    else:
        raise DataError(f"{path}: expected COCO-format references ({{'annotations': [...]}}), got {type(data).__name__}")
    if not gts:
        raise DataError(f"{path}: no reference captions found")
    return dict(gts)
