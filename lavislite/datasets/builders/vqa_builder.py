"""VQA builders: ``coco_vqa`` (VQAv2), ``vg_vqa`` (Visual Genome QA), ``ok_vqa``, ``aok_vqa``.

BLIP fine-tunes VQA on VQAv2 train + val + Visual Genome: list ``coco_vqa`` and ``vg_vqa`` together in a
project's ``datasets:`` and their train splits are concatenated (VG answers weigh 0.2). Eval splits get
the candidate answers of ``build_info.answer_list`` (``{url, path, sha256}``).
"""

from __future__ import annotations

from typing import Any

from lavislite.common.registry import registry
from lavislite.datasets.annotations import AnnotationTable
from lavislite.datasets.builders.base_builder import BaseDatasetBuilder
from lavislite.datasets.datasets.vqa_datasets import (
    AOKVQAEvalDataset,
    AOKVQATrainDataset,
    VQAEvalDataset,
    VQATrainDataset,
    load_answer_list,
)


class VQABuilder(BaseDatasetBuilder):
    """Shared VQA wiring: the record source for training weights, the answer list for evaluation."""

    train_dataset_cls = VQATrainDataset
    eval_dataset_cls = VQAEvalDataset
    default_source = "vqa"  # records without a "dataset" field count as VQAv2 (count/len weights)

    def answer_list(self, split: str, table: AnnotationTable) -> list[str] | None:
        if not self.is_configured("answer_list"):
            return None
        return load_answer_list(self.resolve_files("answer_list")[0])

    def dataset_kwargs(self, split: str, table: AnnotationTable) -> dict[str, Any]:
        if self.is_train(split):
            return {"default_source": self.default_source}
        return {"answer_list": self.answer_list(split, table)}


@registry.register_builder("coco_vqa")
class COCOVQABuilder(VQABuilder):
    name = "coco_vqa"
    data_dir = "vqav2"
    DATASET_CONFIG_DICT = {"default": "datasets/coco/vqa.yaml"}


@registry.register_builder("vg_vqa")
class VGVQABuilder(VQABuilder):
    name = "vg_vqa"
    data_dir = "vg"
    default_source = "vg"
    DATASET_CONFIG_DICT = {"default": "datasets/vg/vqa.yaml"}


@registry.register_builder("ok_vqa")
class OKVQABuilder(VQABuilder):
    name = "ok_vqa"
    data_dir = "okvqa"
    DATASET_CONFIG_DICT = {"default": "datasets/okvqa/defaults.yaml"}


@registry.register_builder("aok_vqa")
class AOKVQABuilder(VQABuilder):
    name = "aok_vqa"
    data_dir = "aokvqa"
    train_dataset_cls = AOKVQATrainDataset
    eval_dataset_cls = AOKVQAEvalDataset
    DATASET_CONFIG_DICT = {"default": "datasets/aokvqa/defaults.yaml"}
