"""Dataset builders. Importing this package registers every built-in builder (the registry imports it
lazily on the first ``registry.get_builder_class`` miss)."""

from lavislite.datasets.builders.base_builder import BaseDatasetBuilder
from lavislite.datasets.builders.caption_builder import COCOCaptionBuilder, NoCapsBuilder
from lavislite.datasets.builders.generic_builder import ImageQABuilder, ImageTextBuilder
from lavislite.datasets.builders.nlvr_builder import NLVRBuilder
from lavislite.datasets.builders.pretrain_builder import PretrainJsonBuilder, PretrainWebDatasetBuilder
from lavislite.datasets.builders.retrieval_builder import COCORetrievalBuilder, Flickr30kBuilder
from lavislite.datasets.builders.vqa_builder import AOKVQABuilder, COCOVQABuilder, OKVQABuilder, VGVQABuilder


def load_dataset(name: str, cfg=None, cache_dir=None, skip_bad_samples: bool = False) -> dict:
    """Build ``{split: Dataset}`` of the builder registered as ``name`` (its default yaml when ``cfg`` is None)."""
    from lavislite.common.registry import registry

    return registry.get_builder_class(name)(cfg, cache_dir, skip_bad_samples=skip_bad_samples).build_datasets()


__all__ = [
    "AOKVQABuilder",
    "BaseDatasetBuilder",
    "COCOCaptionBuilder",
    "COCORetrievalBuilder",
    "COCOVQABuilder",
    "Flickr30kBuilder",
    "ImageQABuilder",
    "ImageTextBuilder",
    "NLVRBuilder",
    "NoCapsBuilder",
    "OKVQABuilder",
    "PretrainJsonBuilder",
    "PretrainWebDatasetBuilder",
    "VGVQABuilder",
    "load_dataset",
]
from lavislite.datasets.builders import video_builders  # noqa: E402,F401  (msrvtt_retrieval, msrvtt_qa, msvd_qa, video_text)
