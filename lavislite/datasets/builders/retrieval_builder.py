"""Image-text retrieval builders: ``coco_retrieval`` and ``flickr30k`` (Karpathy-format splits)."""

from __future__ import annotations

from lavislite.common.registry import registry
from lavislite.datasets.builders.base_builder import BaseDatasetBuilder
from lavislite.datasets.datasets.retrieval_datasets import RetrievalEvalDataset, RetrievalTrainDataset


class RetrievalBuilder(BaseDatasetBuilder):
    train_dataset_cls = RetrievalTrainDataset
    eval_dataset_cls = RetrievalEvalDataset


@registry.register_builder("coco_retrieval")
class COCORetrievalBuilder(RetrievalBuilder):
    name = "coco_retrieval"
    data_dir = "coco"
    DATASET_CONFIG_DICT = {"default": "datasets/coco/retrieval.yaml"}


@registry.register_builder("flickr30k")
class Flickr30kBuilder(RetrievalBuilder):
    name = "flickr30k"
    data_dir = "flickr30k"
    DATASET_CONFIG_DICT = {"default": "datasets/flickr30k/retrieval.yaml"}
