"""``BaseDatasetBuilder``: config -> ``{split: Dataset}``.

A builder reads its section of the run config (``datasets.<name>``; the builder's yaml is the schema):

* ``build_info.annotations.<split>``: ``{url, path, sha256}`` (url and path may be lists). A set ``path``
  is used as is (relative to the working directory); otherwise the ``url`` is fetched once into
  ``<cache>/<data_dir>/annotations/`` (offline, or on an HTTP error: a DownloadError naming the URL and
  where to put the file). A split is built only when its ``path`` or ``url`` is set. Entries named
  ``<split>_gt`` are COCO-format caption ground truths, not splits.
* ``build_info.images.storage`` (``videos.storage`` for video builders): the folder that relative media
  paths in the records are joined to. A relative storage is under the cache dir (``coco/images`` ->
  ``<cache>/coco/images``); one starting with ``./`` or ``../`` is under the working directory; ``~`` and
  absolute paths are used as they are; null means "the folder of the annotation file".
* ``vis_processor`` / ``text_processor``: ``{train: {name, ...}, eval: {name, ...}}``; splits whose name
  starts with ``train`` use the train processors, every other split the eval ones.

Records are validated on load (:mod:`lavislite.datasets.annotations`); ``skip_bad_samples`` (wired from
``run.skip_bad_samples`` by the task) skips and counts bad records and bad media instead of failing.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from lavislite.common.errors import ConfigError, DataError, DownloadError
from lavislite.datasets.annotations import AnnotationTable, load_annotations

logger = logging.getLogger(__name__)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [v for v in value if v is not None]
    return [value]


def resolve_storage(value: str | Path, cache_dir: Path) -> Path:
    """A media root: ``./x``/``../x`` -> working dir, absolute or ``~`` -> as is, other relative -> cache dir."""
    text = str(value)
    if text in (".", "..") or text.startswith(("./", "../", ".\\", "..\\")):
        return Path(os.path.normpath(Path.cwd() / text))  # normpath, not resolve: keep symlinked roots
    p = Path(text).expanduser()
    return p if p.is_absolute() else cache_dir / p


class BaseDatasetBuilder:
    """Builds the datasets of one data set family from its config section (see the module docstring)."""

    DATASET_CONFIG_DICT: ClassVar[dict[str, str]] = {}
    name: ClassVar[str] = ""  # the registered name: the yaml section and the key in messages
    data_dir: ClassVar[str] = ""  # cache folder of this data set's downloaded annotations
    train_dataset_cls: ClassVar[type | None] = None
    eval_dataset_cls: ClassVar[type | None] = None
    media_kind: ClassVar[str] = "images"  # build_info.<media_kind>.storage

    def __init__(self, cfg: Any = None, cache_dir: str | Path | None = None, skip_bad_samples: bool = False) -> None:
        if cfg is None:
            cfg = self.default_config()
        elif not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(dict(cfg))
        self.config = cfg
        if cache_dir is None:
            from lavislite.common.config import get_cache_dir

            cache_dir = get_cache_dir()
        self.cache_dir = Path(cache_dir).expanduser()
        self.skip_bad_samples = bool(skip_bad_samples)
        self.datasets: dict[str, Any] = {}
        self._eval_processors: tuple[Any, Any] = (None, None)

    def use_eval_processors(self, vis: Any = None, text: Any = None) -> None:
        """Build eval splits with these processors instead of the configured ones (None: keep that one)."""
        self._eval_processors = (vis, text)

    # -- configs -----------------------------------------------------------------------------
    @classmethod
    def default_config_path(cls, dataset_type: str = "default") -> Path:
        """The yaml of ``dataset_type``; a clear error lists the valid types."""
        from lavislite.common.config import CONFIG_ROOT

        table = cls.DATASET_CONFIG_DICT
        if dataset_type not in table:
            close = difflib.get_close_matches(str(dataset_type), list(table), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{cls.__name__} has no dataset type {dataset_type!r}.{hint} Valid types: {', '.join(sorted(table)) or '(none)'}")
        path = Path(table[dataset_type])
        return path if path.is_absolute() else CONFIG_ROOT / path

    @classmethod
    def default_config(cls, dataset_type: str = "default") -> DictConfig:
        """This builder's section of its default yaml."""
        from lavislite.common.config import load_yaml

        path = cls.default_config_path(dataset_type)
        data = load_yaml(path)
        sections = data.get("datasets")
        if not sections:
            raise ConfigError(f"{path}: a dataset yaml needs a top-level 'datasets: {{<builder name>: ...}}' section")
        if cls.name and cls.name in sections:
            return sections[cls.name]
        if len(sections) == 1:
            return next(iter(sections.values()))
        raise ConfigError(f"{path}: no section {cls.name!r} under datasets:")

    @property
    def label(self) -> str:
        return f"datasets.{self.name or type(self).__name__}"

    def _get(self, dotted: str, default: Any = None) -> Any:
        value = OmegaConf.select(self.config, dotted, default=default)
        return default if value is None else value

    # -- splits and files ----------------------------------------------------------------------
    def splits(self) -> list[str]:
        """The splits with an annotation ``path`` or ``url`` configured."""
        anns = self._get("build_info.annotations", {})
        return [str(s) for s in anns.keys() if not str(s).endswith("_gt") and str(s) != "_open_" and self.is_configured(f"annotations.{s}")]

    @staticmethod
    def is_train(split: str) -> bool:
        return split.startswith("train")

    def is_configured(self, key: str) -> bool:
        """Whether ``build_info.<key>`` names a file (a path or a url)."""
        entry = self._get(f"build_info.{key}")
        if isinstance(entry, (DictConfig, dict)):
            return bool(_as_list(entry.get("path")) or _as_list(entry.get("url")))
        return bool(_as_list(entry))

    def resolve_entry(self, split: str) -> list[Path]:
        """Local annotation files of ``split`` (see :meth:`resolve_files`)."""
        return self.resolve_files(f"annotations.{split}")

    def resolve_files(self, key: str) -> list[Path]:
        """Local files of ``build_info.<key>``: the ``path`` if set, else the ``url`` fetched into the cache."""
        from lavislite.common.download import cached_path, is_url

        entry = self._get(f"build_info.{key}")
        where = f"{self.label}.build_info.{key}"
        if entry is None:
            return []
        if not isinstance(entry, (DictConfig, dict)):
            entry = {"url": entry}
        paths, urls, hashes = _as_list(entry.get("path")), _as_list(entry.get("url")), _as_list(entry.get("sha256"))
        if paths:
            out = [Path(str(p)).expanduser() for p in paths]
            for p in out:
                if not p.is_file():
                    alt = f", or set it to null to download {', '.join(map(str, urls))}" if urls else ""
                    raise DataError(f"annotation file {p} ({where}.path) not found. Fix the path{alt}.")
            return out
        if hashes and len(hashes) != len(urls):
            raise ConfigError(f"{where}: sha256 lists {len(hashes)} hashes for {len(urls)} urls; give one per url (or none)")
        out = []
        for i, url in enumerate(urls):
            url = str(url)
            try:
                out.append(
                    cached_path(
                        url, cache_dir=self.cache_dir, sha256=str(hashes[i]) if hashes else None, subdir=f"{self.data_dir or self.name}/annotations"
                    )
                )
            except DownloadError as exc:
                hint = f" Or set {where}.path to a local copy." if is_url(url) else ""
                raise DownloadError(f"{where}: {exc}{hint}") from exc
        return out

    def media_root(self, ann_files: Sequence[Path]) -> Path | None:
        """The folder media paths are joined to (see the module docstring); checked to exist."""
        storage = self._get(f"build_info.{self.media_kind}.storage")
        if storage is None:
            return ann_files[0].parent if ann_files else None
        root = resolve_storage(storage, self.cache_dir)
        if not root.is_dir():
            raise DataError(
                f"the {self.media_kind} folder {root} ({self.label}.build_info.{self.media_kind}.storage={storage!r}) does not exist. "
                f"Put the {self.media_kind} there, or point at your copy: --options "
                f"{self.label}.build_info.{self.media_kind}.storage=/path/to/{self.media_kind}"
            )
        return root

    # -- processors ------------------------------------------------------------------------------
    def build_processor(self, kind: str, stage: str) -> Any:
        """``{vis,text}_processor.<train|eval>`` from the config, built through the registry."""
        from lavislite.common.registry import registry

        section = self._get(f"{kind}.{stage}")
        if section is None:
            return None
        name = section.get("name")
        if not name:
            raise ConfigError(f"{self.label}.{kind}.{stage} needs a 'name' (a registered processor, e.g. blip_image_eval)")
        return registry.get_processor_class(name).from_config(section)

    def processors(self, split: str) -> tuple[Any, Any]:
        stage = "train" if self.is_train(split) else "eval"
        override = getattr(self, "_eval_processors", (None, None))  # subclasses may skip our __init__
        if stage == "eval" and any(p is not None for p in override):
            vis, text = override
            return (vis or self.build_processor("vis_processor", stage)), (text or self.build_processor("text_processor", stage))
        vis = self.build_processor("vis_processor", stage)
        if vis is None:
            raise ConfigError(
                f"{self.label}.vis_processor.{stage} is not set; the {split!r} split needs it (e.g. {{name: blip_image_{stage}, image_size: 384}})"
            )
        return vis, self.build_processor("text_processor", stage)

    # -- building --------------------------------------------------------------------------------
    def dataset_class(self, split: str) -> type:
        cls = self.train_dataset_cls if self.is_train(split) else self.eval_dataset_cls
        if cls is None:
            kind = "train" if self.is_train(split) else "eval"
            raise ConfigError(f"{self.label}: split {split!r} is not supported by {type(self).__name__} (no {kind} dataset class)")
        return cls

    def record_filter(self, split: str) -> Any:
        """A callable keeping the records of ``split`` (None: keep all); generic builders use the 'split' field."""
        return None

    def load_table(self, split: str, cls: type, files: Sequence[Path]) -> AnnotationTable:
        return load_annotations(files, cls.FIELDS, skip_bad=self.skip_bad_samples, keep=self.record_filter(split), check=cls.check_record)

    def dataset_kwargs(self, split: str, table: AnnotationTable) -> dict[str, Any]:
        """Extra keyword arguments of the split's dataset class (answer lists, gt files, ...)."""
        return {}

    def build_split(self, split: str) -> Any:
        cls = self.dataset_class(split)
        files = self.resolve_entry(split)
        table = self.load_table(split, cls, files)
        if not table.records:
            raise DataError(f"{self.label}: split {split!r} has no usable records in {', '.join(map(str, files))}")
        vis, text = self.processors(split)
        ds = cls(table, vis, text, self.media_root(files), skip_bad_samples=self.skip_bad_samples, **self.dataset_kwargs(split, table))
        if hasattr(ds, "prepare_for_workers"):
            ds.prepare_for_workers()
        return ds

    def build_datasets(self) -> dict[str, Any]:
        """``{split: Dataset}`` for every configured split."""
        splits = self.splits()
        if not splits:
            raise ConfigError(f"{self.label}: no split has annotations; set build_info.annotations.<split>.path (or url)")
        self.datasets = {split: self.build_split(split) for split in splits}
        if self.num_skipped:
            logger.warning("%s: %d bad records skipped while loading (run.skip_bad_samples=true)", self.label, self.num_skipped)
        return self.datasets

    @property
    def num_skipped(self) -> int:
        """Bad records/samples skipped so far, over every built split."""
        return sum(int(getattr(d, "num_skipped", 0) or 0) for d in self.datasets.values())
