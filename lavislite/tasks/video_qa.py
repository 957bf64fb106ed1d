"""Zero-shot video question answering with an image VQA model (BLIP paper §5.6, BLIP_FACTS §4).

"We uniformly sample n frames per video (n = 16 for QA) and concatenate the frame features into a single
sequence": each frame goes through the ViT, the frame tokens are concatenated into (B, T*N, D) and given
to ``model.predict_answers`` as ``samples["image_embeds"]``, so the question encoder cross-attends to
every token of every frame. Answers come from ``inference_method``: ``generate`` (beam search; the path
BLIP's maintainer points to in BLIP issue #65, the default here) or ``rank`` (the dataset's
``answer_list``, BLIP's VQAv2 setting).

Accuracy = percentage of questions whose answer equals the ground truth after VQA answer normalisation
(:func:`lavislite.metrics.normalize_answer` on both sides: lower case, punctuation, articles, number
words -> digits); a question with several reference answers counts as correct when any matches.
Writes ``<output_dir>/<split>_videoqa_result.json`` (``[{"question_id", "answer"}]``).

Any model with ``predict_answers`` accepting ``samples["image_embeds"]`` and a frame encoder
(``encode_image`` returning the tokens first, or a ``visual_encoder`` module) works. With
``run.skip_bad_samples``, questions on unreadable videos are left out and counted (``num_skipped``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.tasks._common import loader_dataset, plain_id, unwrap, write_json
from lavislite.tasks.vqa import VQATask

logger = logging.getLogger(__name__)


def frame_tokens(model: nn.Module, video: Tensor, frames_per_forward: int = 64) -> Tensor:
    """Tokens of every frame of a (B, T, 3, H, W) batch, concatenated per video: (B, T*N, D)."""
    if video.dim() != 5:
        raise DataError(f"video QA needs samples['video'] of shape (B, T, 3, H, W), got {tuple(video.shape)}")
    encode = model.visual_tokens
    b, t = video.shape[:2]
    frames = video.flatten(0, 1)
    step = max(1, int(frames_per_forward))
    parts = [encode(frames[s : s + step]) for s in range(0, frames.shape[0], step)]
    tokens = torch.cat(parts) if len(parts) > 1 else parts[0]
    return tokens.reshape(b, t * tokens.shape[1], tokens.shape[2])


@registry.register_task("video_qa")
class VideoQATask(VQATask):
    """Evaluation only: frames -> concatenated tokens -> ``predict_answers`` -> exact-match accuracy."""

    RUN_DEFAULTS: ClassVar[dict] = {
        **VQATask.RUN_DEFAULTS,
        "inference_method": "generate",  # generate (BLIP issue #65) | rank (over the dataset's answer_list)
        "vit_frames_per_batch": 64,  # frames per ViT forward
    }
    result_id_key = "question_id"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._expected: dict[str, int] = {}

    def train_step(self, model: nn.Module, samples: dict[str, Any]) -> dict[str, Any]:
        raise ConfigError("the video_qa task evaluates zero-shot transfer only; set run.evaluate=true")

    def evaluation(self, model: nn.Module, data_loader: Any, split: str) -> list[dict]:
        dataset = loader_dataset(data_loader, split)
        self._expected[split] = len(dataset)
        return super().evaluation(model, data_loader, split)

    def valid_step(self, model: nn.Module, samples: dict[str, Any]) -> list[dict]:
        model = unwrap(model)
        if "video" not in samples:
            raise DataError(f"video QA needs samples['video']; the batch has {sorted(samples)}")
        embeds = frame_tokens(model, samples["video"], int(self.run_key("vit_frames_per_batch")))
        answers = model.predict_answers(
            {"image_embeds": embeds, "text_input": samples["text_input"]},
            answer_list=self._answer_lists.get(self._current_split) if self._current_split else None,
            inference_method=str(self.run_key("inference_method")),
            num_beams=int(self.run_key("num_beams")),
            max_len=int(self.run_key("max_len")),
            min_len=int(self.run_key("min_len")),
            num_ans_candidates=int(self.run_key("num_ans_candidates")),
        )
        return [{"question_id": plain_id(q), "answer": a} for q, a in zip(samples["question_id"], answers)]

    def after_evaluation(self, results: list[dict], split: str, output_dir: Path | None, epoch: Any) -> dict[str, Any]:
        from lavislite.metrics import exact_match_accuracy, normalize_answer

        if output_dir is not None:
            path = write_json(Path(output_dir) / f"{split}_videoqa_result.json", [{"question_id": r["question_id"], "answer": r["answer"]} for r in results])
            logger.info("wrote %d answers to %s", len(results), path)
        expected = self._expected.get(split, len(results))
        metrics: dict[str, Any] = {"num_questions": len(results), "num_skipped": max(0, expected - len(results))}
        if metrics["num_skipped"]:
            logger.warning("video QA %s: %d question(s) on unreadable videos were skipped; accuracy is over the other %d", split, metrics["num_skipped"], len(results))
        gts = self._gts.get(split)
        if not gts or not results:
            return metrics
        answers, _ = gts
        preds = {r["question_id"]: r["answer"] for r in results}
        by_text = {str(k): v for k, v in answers.items()}
        refs = {}
        for qid, pred in preds.items():
            gt = answers.get(qid, by_text.get(str(qid)))
            if not gt:
                raise DataError(f"video QA {split}: question {qid!r} has no ground-truth answer; evaluate against the same split's annotations")
            norm = normalize_answer(pred)
            refs[qid] = next((a for a in gt if normalize_answer(a) == norm), gt[0])  # any reference may match
        acc = exact_match_accuracy(preds, refs, normalize=True)
        metrics.update({"agg_metrics": acc, "accuracy": acc})
        return metrics
