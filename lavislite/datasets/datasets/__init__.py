"""Dataset classes (one module per family). Importing this package is cheap (no webdataset import)."""

from lavislite.datasets.datasets.base_dataset import BaseDataset, collate_dicts
from lavislite.datasets.datasets.caption_datasets import ImageTextEvalDataset, ImageTextTrainDataset, NoCapsEvalDataset
from lavislite.datasets.datasets.nlvr_datasets import NLVRDataset
from lavislite.datasets.datasets.pretrain_datasets import PretrainJsonDataset, WebDatasetPretrain
from lavislite.datasets.datasets.retrieval_datasets import RetrievalEvalDataset, RetrievalTrainDataset
from lavislite.datasets.datasets.vqa_datasets import AOKVQAEvalDataset, AOKVQATrainDataset, VQAEvalDataset, VQATrainDataset

__all__ = [
    "AOKVQAEvalDataset",
    "AOKVQATrainDataset",
    "BaseDataset",
    "ImageTextEvalDataset",
    "ImageTextTrainDataset",
    "NLVRDataset",
    "NoCapsEvalDataset",
    "PretrainJsonDataset",
    "RetrievalEvalDataset",
    "RetrievalTrainDataset",
    "VQAEvalDataset",
    "VQATrainDataset",
    "WebDatasetPretrain",
    "collate_dicts",
]
