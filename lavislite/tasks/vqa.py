"""Visual question answering (VQAv2, OK-VQA, A-OKVQA): answers ranked from the answer list or generated.

Evaluation writes ``<output_dir>/<split>_vqa_result.json`` in the official submission format
(``[{"question_id": ..., "answer": ...}]``). When the split's ground-truth answers are known
(``dataset.gt_answers``, an official annotation file ``dataset.gt_file``, or answers in
``dataset.annotation``), it also reports the standard VQA accuracy (``agg_metrics`` = overall, in %),
per answer type when the annotations carry ``answer_type``. VQAv2 test-dev/test-std have no public
answers: only the submission file is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping

from torch import nn

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.models.protocols import VQAModel
from lavislite.tasks._common import loader_dataset, plain_id, unwrap, write_json
from lavislite.tasks.base_task import BaseTask

logger = logging.getLogger(__name__)


@registry.register_task("vqa")
class VQATask(BaseTask):
    """Train with the weighted answer LM loss (``model(samples)``); evaluate with ``predict_answers``."""

    RUN_DEFAULTS: ClassVar[dict] = {
        "inference_method": "rank",  # rank (answer_list candidates, BLIP's VQAv2 setting) | generate
        "num_ans_candidates": 128,  # rank: candidates kept after the first-token filter (BLIP k_test)
        "num_beams": 3,  # generate
        "max_len": 10,
        "min_len": 1,
        "report_metric": True,  # false: write the submission file only
    }
    select_metric = "agg_metrics"
    result_id_key = "question_id"
    requires = (VQAModel,)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._answer_lists: dict[str, list[str] | None] = {}
        self._gts: dict[str, tuple[dict, dict | None] | None] = {}
        self._current_split: str | None = None

    # -- evaluation -------------------------------------------------------------------------------
    def evaluation(self, model: nn.Module, data_loader: Any, split: str) -> list[dict]:
        dataset = loader_dataset(data_loader, split)
        answer_list = getattr(dataset, "answer_list", None)
        if self.run_key("inference_method") == "rank" and not answer_list:
            raise ConfigError(
                f"split {split!r}: run.inference_method=rank needs the dataset's answer_list (BLIP: answer_list.json); "
                f"add it to the dataset's build_info, or use run.inference_method=generate"
            )
        self._answer_lists[split] = list(answer_list) if answer_list else None
        self._current_split = split
        self._gts[split] = gt_answers_of(dataset) if self.run_key("report_metric") else None
        return super().evaluation(model, data_loader, split)

    def valid_step(self, model: nn.Module, samples: dict[str, Any]) -> list[dict]:
        answers = unwrap(model).predict_answers(
            samples,
            answer_list=self._answer_lists.get(self._current_split) if self._current_split else None,
            inference_method=str(self.run_key("inference_method")),
            num_beams=int(self.run_key("num_beams")),
            max_len=int(self.run_key("max_len")),
            min_len=int(self.run_key("min_len")),
            num_ans_candidates=int(self.run_key("num_ans_candidates")),
        )
        qids = samples.get("question_id")
        if qids is None:
            raise DataError("VQA evaluation needs samples['question_id'] from the dataset's collater")
        return [{"question_id": plain_id(q), "answer": a} for q, a in zip(qids, answers)]

    def after_evaluation(self, results: list[dict], split: str, output_dir: Path | None, epoch: Any) -> dict[str, Any]:
        if output_dir is not None:
            path = write_json(Path(output_dir) / f"{split}_vqa_result.json", [{"question_id": r["question_id"], "answer": r["answer"]} for r in results])
            logger.info("wrote %d answers to %s", len(results), path)
        gts = self._gts.get(split)
        if not gts:
            return {"num_answers": len(results)}
        from lavislite.metrics import vqa_score

        answers, types = gts
        score = vqa_score({r["question_id"]: r["answer"] for r in results}, answers, types)
        metrics: dict[str, Any] = {"agg_metrics": score["overall"], "overall": score["overall"]}
        for t, v in (score.get("per_answer_type") or {}).items():
            metrics[f"acc_{t}"] = v
        return metrics


def _answers_of(rec: Mapping) -> list[str] | None:
    """The human answers of one annotation record, in any of the formats BLIP/LAVIS/A-OKVQA use."""
    for key in ("answers", "direct_answers", "answer"):
        if key in rec and rec[key] is not None:
            val = rec[key]
            if isinstance(val, str):
                return [val]
            return [a["answer"] if isinstance(a, Mapping) else str(a) for a in val]
    return None


def gt_answers_of(dataset: Any) -> tuple[dict, dict | None] | None:
    """``(question id -> answers, question id -> answer type or None)``, or None when the split has no answers."""
    direct = getattr(dataset, "gt_answers", None)
    if direct:
        return dict(direct), None
    records: Any = None
    gt_file = getattr(dataset, "gt_file", None)
    if gt_file:
        try:
            records = json.loads(Path(gt_file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"VQA ground-truth file {gt_file}: {exc}; fix or remove the dataset's gt_file") from exc
        if isinstance(records, dict):
            records = records.get("annotations", [])
    else:
        records = getattr(dataset, "annotation", None)
    if not records:
        return None
    answers, types = {}, {}
    for rec in records:
        if not isinstance(rec, Mapping) or "question_id" not in rec:
            return None
        got = _answers_of(rec)
        if not got:
            return None  # a test split: questions only
        answers[rec["question_id"]] = got
        if rec.get("answer_type"):
            types[rec["question_id"]] = rec["answer_type"]
    return answers, (types if len(types) == len(answers) else None)
