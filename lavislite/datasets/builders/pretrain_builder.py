"""Pre-training builders: ``pretrain_json`` (JSON lists of image-caption pairs) and ``pretrain_wds``
(webdataset tar shards, streamed; train it with the iteration-based runner)."""

from __future__ import annotations

from typing import Any

from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry
from lavislite.datasets.builders.base_builder import BaseDatasetBuilder, _as_list, resolve_storage
from lavislite.datasets.datasets.pretrain_datasets import PretrainJsonDataset, WebDatasetPretrain


@registry.register_builder("pretrain_json")
class PretrainJsonBuilder(BaseDatasetBuilder):
    """``build_info.annotations.train``: one or more ``{"image", "caption"}`` JSON lists."""

    name = "pretrain_json"
    data_dir = "pretrain"
    train_dataset_cls = PretrainJsonDataset
    DATASET_CONFIG_DICT = {"default": "datasets/pretrain/json.yaml"}


@registry.register_builder("pretrain_wds")
class PretrainWebDatasetBuilder(BaseDatasetBuilder):
    """``build_info.shards``: brace pattern(s) of ``.tar`` shards (relative ones resolve like a storage root)."""

    name = "pretrain_wds"
    data_dir = "pretrain"
    DATASET_CONFIG_DICT = {"default": "datasets/pretrain/wds.yaml"}

    def splits(self) -> list[str]:
        return ["train"] if _as_list(self._get("build_info.shards")) else []

    def shard_patterns(self) -> list[str]:
        out = []
        for spec in _as_list(self._get("build_info.shards")):
            spec = str(spec)
            out.append(spec if "://" in spec or spec.startswith("pipe:") else str(resolve_storage(spec, self.cache_dir)))
        return out

    def build_datasets(self) -> dict[str, Any]:
        patterns = self.shard_patterns()
        if not patterns:
            raise ConfigError(f"{self.label}.build_info.shards is not set; give the shards, e.g. /data/cc3m/{{00000..00331}}.tar")
        vis, text = self.processors("train")
        self.datasets = {
            "train": WebDatasetPretrain(
                patterns,
                vis,
                text,
                skip_bad_samples=self.skip_bad_samples,
                shuffle_buffer=int(self._get("build_info.shuffle_buffer", 0)),
            )
        }
        return self.datasets
