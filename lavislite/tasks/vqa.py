"""Visual question answering about an image (VQAv2, OK-VQA, A-OKVQA) or a video (MSRVTT-QA, MSVD-QA).

One task, two configurations (``run.visual_input``): ``vqa`` asks about ``samples["image"]``; ``video_qa``
(zero-shot, BLIP paper §5.6) asks about a video's sampled frames: "we uniformly sample n frames per video
and concatenate the frame features into a single sequence", so each frame goes through
``model.visual_tokens``, the frame tokens are concatenated into (B, T*N, D) and given to
``model.predict_answers`` as ``samples["image_embeds"]``; the question encoder cross-attends to every token
of every frame. Answers come from ``run.inference_method``: ``rank`` (the dataset's ``answer_list``, BLIP's
VQAv2 setting) or ``generate`` (beam search; the video default, the path BLIP's maintainer points to in
BLIP issue #65).

Evaluation writes ``<output_dir>/<split>_vqa_result.json`` (videos: ``_videoqa_result.json``) in the
official submission format (``[{"question_id": ..., "answer": ...}]``). When the split's ground-truth
answers are known (``dataset.gt_answers``, an official annotation file ``dataset.gt_file``, or answers in
``dataset.annotation``), it also reports ``run.answer_metric``:

* ``vqa`` (images): the standard VQA accuracy (``agg_metrics`` = overall, in %), per answer type when the
  annotations carry ``answer_type``. VQAv2 test-dev/test-std have no public answers: only the submission
  file is written.
* ``exact_match`` (videos): the percentage of questions whose answer equals the ground truth after VQA
  answer normalisation (:func:`lavislite.metrics.normalize_answer` on both sides); a question with several
  reference answers counts as correct when any matches.

With ``run.skip_bad_samples``, questions on unreadable files are left out and counted (``num_skipped``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.common.utils import write_json
from lavislite.models.protocols import VQAModel
from lavislite.tasks._common import loader_dataset, plain_id, unwrap
from lavislite.tasks.base_task import BaseTask

logger = logging.getLogger(__name__)

_RESULT_FILES = {"image": "{split}_vqa_result.json", "video": "{split}_videoqa_result.json"}
_ANSWER_METRICS = ("vqa", "exact_match")


def frame_tokens(model: Any, video: Tensor, frames_per_forward: int = 64) -> Tensor:
    """``model.visual_tokens`` of every frame of a (B, T, 3, H, W) batch, concatenated per video: (B, T*N, D)."""
    if video.dim() != 5:
        raise DataError(f"video QA needs samples['video'] of shape (B, T, 3, H, W), got {tuple(video.shape)}")
    b, t = video.shape[:2]
    frames = video.flatten(0, 1)
    step = max(1, int(frames_per_forward))
    parts = [model.visual_tokens(frames[s : s + step]) for s in range(0, frames.shape[0], step)]
    tokens = torch.cat(parts) if len(parts) > 1 else parts[0]
    return tokens.reshape(b, t * tokens.shape[1], tokens.shape[2])


@registry.register_task("vqa")
class VQATask(BaseTask):
    """Train with the weighted answer LM loss (``model(samples)``); evaluate with ``predict_answers``."""

    RUN_DEFAULTS: ClassVar[dict] = {
        "visual_input": "image",  # image | video (sampled frames, tokens concatenated; zero-shot evaluation only)
        "inference_method": "rank",  # rank (answer_list candidates, BLIP's VQAv2 setting) | generate
        "num_ans_candidates": 128,  # rank: candidates kept after the first-token filter (BLIP k_test)
        "num_beams": 3,  # generate
        "max_len": 10,
        "min_len": 1,
        "report_metric": True,  # false: write the submission file only
        "answer_metric": "vqa",  # vqa (VQAv2 accuracy over human answers) | exact_match (normalised, any reference)
        "vit_frames_per_batch": 64,  # video: frames per visual_tokens call
    }
    select_metric = "agg_metrics"
    result_id_key = "question_id"
    requires = (VQAModel,)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._answer_lists: dict[str, list[str] | None] = {}
        self._gts: dict[str, tuple[dict, dict | None] | None] = {}
        self._current_split: str | None = None
        self._expected: dict[str, int] = {}

    def visual_input(self) -> str:
        """``run.visual_input``: ``image`` or ``video``."""
        name = str(self.run_key("visual_input"))
        if name not in _RESULT_FILES:
            raise ConfigError(f"run.visual_input={name!r}; use one of {', '.join(_RESULT_FILES)}")
        return name

    def train_step(self, model: nn.Module, samples: dict[str, Any]) -> dict[str, Any]:
        if self.visual_input() == "video":
            raise ConfigError("question answering over videos evaluates zero-shot transfer only; set run.evaluate=true")
        return super().train_step(model, samples)

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
        self._expected[split] = len(dataset)
        return super().evaluation(model, data_loader, split)

    def valid_step(self, model: nn.Module, samples: dict[str, Any]) -> list[dict]:
        model = unwrap(model)
        inputs = samples
        if self.visual_input() == "video":
            if "video" not in samples:
                raise DataError(f"video QA needs samples['video']; the batch has {sorted(samples)}")
            embeds = frame_tokens(model, samples["video"], int(self.run_key("vit_frames_per_batch")))
            inputs = {"image_embeds": embeds, "text_input": samples["text_input"]}
        answers = model.predict_answers(
            inputs,
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
        kind = self.visual_input()
        if output_dir is not None:
            name = _RESULT_FILES[kind].format(split=split)
            path = write_json(Path(output_dir) / name, [{"question_id": r["question_id"], "answer": r["answer"]} for r in results])
            logger.info("wrote %d answers to %s", len(results), path)
        metrics: dict[str, Any] = {}
        skipped = max(0, self._expected.get(split, len(results)) - len(results))
        if kind == "video" or skipped:
            metrics.update({"num_questions": len(results), "num_skipped": skipped})
        if skipped:
            logger.warning("VQA %s: %d question(s) on unreadable files were skipped; accuracy is over the other %d", split, skipped, len(results))
        gts = self._gts.get(split)
        if not gts or not results:
            return metrics or {"num_answers": len(results)}
        metric = str(self.run_key("answer_metric"))
        if metric not in _ANSWER_METRICS:
            raise ConfigError(f"run.answer_metric={metric!r}; use one of {', '.join(_ANSWER_METRICS)}")
        preds = {r["question_id"]: r["answer"] for r in results}
        metrics.update(_vqa_accuracy(preds, *gts) if metric == "vqa" else _exact_match(preds, gts[0], split))
        return metrics


def _vqa_accuracy(preds: dict, answers: dict, types: dict | None) -> dict[str, Any]:
    """The VQAv2 accuracy: ``agg_metrics`` = ``overall`` and ``acc_<answer type>``."""
    from lavislite.metrics import vqa_score

    score = vqa_score(preds, answers, types)
    out: dict[str, Any] = {"agg_metrics": score["overall"], "overall": score["overall"]}
    for t, v in (score.get("per_answer_type") or {}).items():
        out[f"acc_{t}"] = v
    return out


def _exact_match(preds: dict, answers: dict, split: str) -> dict[str, Any]:
    """Normalised exact-match accuracy against any of a question's references: ``agg_metrics`` = ``accuracy``."""
    from lavislite.metrics import exact_match_accuracy, normalize_answer

    by_text = {str(k): v for k, v in answers.items()}
    refs = {}
    for qid, pred in preds.items():
        gt = answers.get(qid, by_text.get(str(qid)))
        if not gt:
            raise DataError(f"VQA {split}: question {qid!r} has no ground-truth answer; evaluate against the same split's annotations")
        norm = normalize_answer(pred)
        refs[qid] = next((a for a in gt if normalize_answer(a) == norm), gt[0])  # any reference may match
    acc = exact_match_accuracy(preds, refs, normalize=True)
    return {"agg_metrics": acc, "accuracy": acc}


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


@registry.register_task("video_qa")
class VideoQATask(VQATask):
    """``vqa`` over videos (BLIP's zero-shot MSRVTT-QA / MSVD-QA setting): only the defaults differ."""

    RUN_DEFAULTS: ClassVar[dict] = {
        **VQATask.RUN_DEFAULTS,
        "visual_input": "video",
        "inference_method": "generate",  # generate (BLIP issue #65) | rank (over the dataset's answer_list)
        "answer_metric": "exact_match",  # what MSRVTT-QA / MSVD-QA report
    }
