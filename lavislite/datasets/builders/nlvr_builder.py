"""NLVR2 builder: ``nlvr`` (train / val = dev / test, each its own file; LAVIS pointed test at dev)."""

from __future__ import annotations

from typing import Any

from lavislite.common.registry import registry
from lavislite.datasets.annotations import AnnotationTable
from lavislite.datasets.builders.base_builder import BaseDatasetBuilder
from lavislite.datasets.datasets.nlvr_datasets import NLVRDataset


@registry.register_builder("nlvr")
class NLVRBuilder(BaseDatasetBuilder):
    """``swap_pairs`` (default true, as BLIP) and ``eval_seed`` control the random pair-order swap."""

    name = "nlvr"
    data_dir = "nlvr2"
    train_dataset_cls = NLVRDataset
    eval_dataset_cls = NLVRDataset
    DATASET_CONFIG_DICT = {"default": "datasets/nlvr/defaults.yaml"}

    def dataset_kwargs(self, split: str, table: AnnotationTable) -> dict[str, Any]:
        return {"train": self.is_train(split), "swap": bool(self._get("swap_pairs", True)), "eval_seed": int(self._get("eval_seed", 0))}
