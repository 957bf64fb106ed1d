"""Your own data: ``image_text`` (images + a JSON of captions) and ``image_qa`` (+ questions and answers).

``image_text`` records ``{"image", "caption": str | [str, ...], "image_id"?, "split"?}`` serve captioning
(train with the caption prompt; eval exposes ``gt_file``) and retrieval (train ``image_id`` per image;
eval exposes ``text``/``img2txt``/``txt2img``). ``image_qa`` records ``{"image", "question", "answer": str
| [str, ...], "question_id"?, "split"?}`` serve VQA. A record with a ``split`` field is used only by that
split, so one file can hold every split. Without ``build_info.images.storage`` image paths are relative
to the annotation file's folder. See docs/own_data.md.
"""

from __future__ import annotations

from typing import Any

from lavislite.common.registry import registry
from lavislite.datasets.annotations import AnnotationTable, Field, load_annotations
from lavislite.datasets.builders.base_builder import BaseDatasetBuilder
from lavislite.datasets.builders.caption_builder import ImageTextBuilderMixin
from lavislite.datasets.builders.vqa_builder import VQABuilder
from lavislite.datasets.datasets.caption_datasets import ImageTextEvalDataset
from lavislite.datasets.datasets.retrieval_datasets import RetrievalTrainDataset
from lavislite.datasets.datasets.vqa_datasets import VQAEvalDataset, VQATrainDataset, collect_answers


class SplitFieldMixin:
    """Records carrying a ``split`` field belong to that split only."""

    def record_filter(self, split: str) -> Any:
        return lambda rec: rec.get("split") in (None, split)


class GenericImageTextTrain(RetrievalTrainDataset):
    """Train samples for captioning and retrieval alike (``image_id`` collated as a long tensor)."""

    FIELDS = RetrievalTrainDataset.FIELDS + (Field("split", "str", required=False),)


class GenericImageTextEval(ImageTextEvalDataset):
    FIELDS = ImageTextEvalDataset.FIELDS + (Field("split", "str", required=False),)


class GenericVQATrain(VQATrainDataset):
    FIELDS = VQATrainDataset.FIELDS + (Field("split", "str", required=False),)


class GenericVQAEval(VQAEvalDataset):
    FIELDS = (
        Field("question", "str"),
        Field("image", "str"),
        Field("answer", "str_or_str_list", required=False),
        Field("question_id", "str_or_int", required=False),
        Field("split", "str", required=False),
    )

    def __init__(self, table: AnnotationTable, *args: Any, **kwargs: Any) -> None:
        for i, rec in enumerate(table.records):  # question ids default to the record position
            rec.setdefault("question_id", i)
        super().__init__(table, *args, **kwargs)


@registry.register_builder("image_text")
class ImageTextBuilder(SplitFieldMixin, ImageTextBuilderMixin, BaseDatasetBuilder):
    name = "image_text"
    data_dir = "image_text"
    train_dataset_cls = GenericImageTextTrain
    eval_dataset_cls = GenericImageTextEval
    DATASET_CONFIG_DICT = {"default": "datasets/generic/image_text.yaml"}


@registry.register_builder("image_qa")
class ImageQABuilder(SplitFieldMixin, VQABuilder):
    """Eval candidates: ``build_info.answer_list`` if set, else every distinct answer of every split."""

    name = "image_qa"
    data_dir = "image_qa"
    train_dataset_cls = GenericVQATrain
    eval_dataset_cls = GenericVQAEval
    DATASET_CONFIG_DICT = {"default": "datasets/generic/image_qa.yaml"}

    def answer_list(self, split: str, table: AnnotationTable) -> list[str] | None:
        if self.is_configured("answer_list"):
            return super().answer_list(split, table)
        tables = []
        for s in self.splits():
            fields = self.dataset_class(s).FIELDS
            tables.append(load_annotations(self.resolve_entry(s), fields, skip_bad=True, keep=self.record_filter(s)).records)
        return collect_answers(tables) or None
