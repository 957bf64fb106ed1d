"""VQA datasets: VQAv2 + Visual Genome QA (BLIP's files), OK-VQA (same format), A-OKVQA.

Train record ``{"question_id", "question", "answer": [str, ...], "image", "dataset": "vqa" | "vg"}``.
Answer weights follow BLIP's ``vqa_dataset``: each distinct answer weighs ``count / number of answers``;
Visual Genome answers (``dataset == "vg"``) weigh 0.2 each. The collater flattens the answers of the
batch and returns ``weight`` as a float tensor and ``n_answers`` as a long tensor (LAVIS returned a
list, which the model could not multiply).

Eval record ``{"question_id", "question", "image", "answer"?: [str, ...]}``. The dataset exposes
``answer_list`` (candidates for rank inference) and ``gt_answers`` (question id -> answers, for the
questions that have them); each batch also carries ``answers`` (a list per question, empty when unknown).

A-OKVQA (LAVIS's ``aokvqa_v1p0_*.json``) stores the ten free-form answers in ``direct_answers`` and has
string question ids, ``choices`` and ``correct_choice_idx``; eval batches pass the last two through.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from lavislite.common.errors import DataError
from lavislite.datasets.annotations import Field, read_records
from lavislite.datasets.datasets.base_dataset import BaseDataset

logger = logging.getLogger(__name__)

VG_WEIGHT = 0.2


def answers_of(record: dict, key: str) -> list[str]:
    value = record.get(key)
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def answer_weights(answers: Sequence[str], source: str) -> tuple[list[str], list[float]]:
    """BLIP's weights: distinct answers with ``count / len(answers)``; VG answers 0.2 each."""
    if source == "vg":
        uniq = list(dict.fromkeys(answers))
        return uniq, [VG_WEIGHT] * len(uniq)
    weights: dict[str, float] = {}
    for a in answers:
        weights[a] = weights.get(a, 0.0) + 1.0 / len(answers)
    return list(weights), list(weights.values())


def load_answer_list(path: str | Path) -> list[str]:
    """A JSON list of candidate answers; duplicates are dropped (order kept) with a warning naming the file."""
    path = Path(path)
    records, bad_utf8 = read_records(path)
    if bad_utf8:
        i = next(iter(bad_utf8))
        raise DataError(f"{path}: entry {i} is not valid UTF-8 text; save the answer list as UTF-8")
    for i, a in enumerate(records):
        if not isinstance(a, str) or not a.strip():
            raise DataError(f"{path}: entry {i} must be a non-empty string, got {a!r:.60}; an answer list is a JSON list of strings")
    uniq = list(dict.fromkeys(records))
    if len(uniq) != len(records):
        logger.warning(
            "%s: %d duplicate answers removed from the answer list (%d remain, first-seen order kept)", path, len(records) - len(uniq), len(uniq)
        )
    return uniq


class VQATrainDataset(BaseDataset):
    """``{"image", "text_input", "answers", "weights", "question_id", "instance_id"}`` per question."""

    answer_key = "answer"
    FIELDS = (
        Field("question", "str"),
        Field("answer", "str_or_str_list"),
        Field("image", "str"),
        Field("question_id", "str_or_int", required=False),
        Field("dataset", "str", required=False),
    )

    def __init__(self, *args: Any, default_source: str = "vqa", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_source = default_source

    def get_sample(self, index: int) -> dict[str, Any]:
        rec = self.annotation[index]
        answers, weights = answer_weights(answers_of(rec, self.answer_key), rec.get("dataset", self.default_source))
        return {
            "image": self.process_image(rec["image"]),
            "text_input": self.text_processor(rec["question"]),
            "answers": answers,
            "weights": weights,
            "question_id": rec.get("question_id", index),
            "instance_id": str(index),
        }

    def collater(self, samples: Sequence[dict]) -> dict[str, Any]:
        if not samples:
            raise DataError("collater got an empty batch")
        answers = [a for s in samples for a in s["answers"]]
        weights = [w for s in samples for w in s["weights"]]
        return {
            "image": torch.stack([s["image"] for s in samples], dim=0),
            "text_input": [s["text_input"] for s in samples],
            "answer": answers,
            "weight": torch.tensor(weights, dtype=torch.float),
            "n_answers": torch.tensor([len(s["answers"]) for s in samples], dtype=torch.long),
            "question_id": [s["question_id"] for s in samples],
            "instance_id": [s["instance_id"] for s in samples],
        }


class VQAEvalDataset(BaseDataset):
    """Questions to answer; ``answer_list`` for rank inference, ``gt_answers`` for scoring."""

    answer_key = "answer"
    extra_keys: tuple[str, ...] = ()
    FIELDS = (
        Field("question_id", "str_or_int"),
        Field("question", "str"),
        Field("image", "str"),
        Field("answer", "str_or_str_list", required=False),
    )

    def __init__(self, *args: Any, answer_list: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer_list = list(answer_list) if answer_list is not None else None
        self.gt_answers = {rec["question_id"]: answers_of(rec, self.answer_key) for rec in self.annotation if rec.get(self.answer_key)}
        seen: dict[Any, int] = {}
        for i, rec in enumerate(self.annotation):
            if rec["question_id"] in seen:
                raise DataError(
                    f"{self.table.where(i)}: field 'question_id' {rec['question_id']!r} repeats record "
                    f"{self.table.origins[seen[rec['question_id']]][1]}; question ids must be unique in an evaluation split"
                )
            seen[rec["question_id"]] = i

    def get_sample(self, index: int) -> dict[str, Any]:
        rec = self.annotation[index]
        sample = {
            "image": self.process_image(rec["image"]),
            "text_input": self.text_processor(rec["question"]),
            "question_id": rec["question_id"],
            "instance_id": str(rec["question_id"]),
            "answers": answers_of(rec, self.answer_key),
        }
        for key in self.extra_keys:
            sample[key] = rec.get(key)
        return sample


class AOKVQATrainDataset(VQATrainDataset):
    answer_key = "direct_answers"
    FIELDS = (
        Field("question", "str"),
        Field("direct_answers", "str_list"),
        Field("image", "str"),
        Field("question_id", "str_or_int", required=False),
    )


class AOKVQAEvalDataset(VQAEvalDataset):
    answer_key = "direct_answers"
    extra_keys = ("choices", "correct_choice_idx")
    FIELDS = (
        Field("question_id", "str_or_int"),
        Field("question", "str"),
        Field("image", "str"),
        Field("direct_answers", "str_list", required=False),
        Field("choices", "str_list", required=False),
        Field("correct_choice_idx", "int", required=False),
    )


def collect_answers(tables: Sequence[Sequence[dict]], key: str = "answer") -> list[str]:
    """Distinct answers over several record lists, in first-seen order (a default candidate list)."""
    out: dict[str, None] = {}
    for records in tables:
        for rec in records:
            for a in answers_of(rec, key):
                out.setdefault(a, None)
    return list(out)
