"""Captioning builders: ``coco_caption`` (COCO Karpathy splits) and ``nocaps`` (eval only)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lavislite.common.errors import DownloadError
from lavislite.common.registry import registry
from lavislite.datasets.annotations import AnnotationTable
from lavislite.datasets.builders.base_builder import BaseDatasetBuilder
from lavislite.datasets.datasets.caption_datasets import ImageTextEvalDataset, ImageTextTrainDataset, NoCapsEvalDataset

logger = logging.getLogger(__name__)


class ImageTextBuilderMixin:
    """Eval splits get ``gt_file`` (the configured ``<split>_gt``) and a cache folder to generate one into."""

    def dataset_kwargs(self: Any, split: str, table: AnnotationTable) -> dict[str, Any]:
        if self.is_train(split):
            return {}
        gt: Path | None = None
        if self.is_configured(f"annotations.{split}_gt"):
            try:
                gt = self.resolve_entry(f"{split}_gt")[0]
            except DownloadError as exc:
                logger.warning("%s; generating the %s ground truth from the annotation captions instead", exc, split)
        return {"gt_file": gt, "gt_dir": self.cache_dir / (self.data_dir or self.name) / "annotations" / "generated"}


@registry.register_builder("coco_caption")
class COCOCaptionBuilder(ImageTextBuilderMixin, BaseDatasetBuilder):
    """COCO Karpathy train/val/test for captioning; eval splits expose ``gt_file``."""

    name = "coco_caption"
    data_dir = "coco"
    train_dataset_cls = ImageTextTrainDataset
    eval_dataset_cls = ImageTextEvalDataset
    DATASET_CONFIG_DICT = {"default": "datasets/coco/caption.yaml"}


@registry.register_builder("nocaps")
class NoCapsBuilder(ImageTextBuilderMixin, BaseDatasetBuilder):
    """NoCaps val/test (``{"image", "img_id"}``); captions go to the evaluation server, no local ground truth."""

    name = "nocaps"
    data_dir = "nocaps"
    eval_dataset_cls = NoCapsEvalDataset
    DATASET_CONFIG_DICT = {"default": "datasets/nocaps/defaults.yaml"}
