"""One image size: the model's ``image_size`` is the size its image processors produce.

A ViT given smaller images than it was built for still runs (it uses the first position embeddings
only), so a processor size that differs from the model's is a silent error. The rule: the processors
of a model (its ``preprocess:`` section) follow ``model.image_size``; an explicit processor size that
contradicts it, in overrides or in a run's dataset processors, is an error naming the key.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf

from lavislite.common.errors import ConfigError


def _takes_image_size(name: str) -> bool:
    from lavislite.common.errors import RegistryError
    from lavislite.common.registry import registry

    try:
        cls = registry.get_processor_class(name)
    except RegistryError:  # an unknown name fails with its own message when the processor is built
        return False
    return "image_size" in inspect.signature(cls.__init__).parameters


def _vis_specs(section: Any, where: str, named: bool = True) -> Iterator[tuple[str, DictConfig]]:
    """``(dotted key, processor spec)`` of every split of a ``vis_processor`` mapping (``named``: with a processor name)."""
    if not isinstance(section, DictConfig):
        return
    for split in section:
        spec = section.get(split)
        if isinstance(spec, DictConfig) and (spec.get("name") or not named):
            yield f"{where}.{split}", spec


def follow_image_size(preprocess: Any, image_size: Any) -> DictConfig:
    """A copy of a ``preprocess`` section whose image processors all produce ``image_size`` px images."""
    prep = OmegaConf.create(OmegaConf.to_container(preprocess, resolve=True) if isinstance(preprocess, DictConfig) else dict(preprocess or {}))
    if image_size is None:
        return prep
    for _, spec in _vis_specs(prep.get("vis_processor"), "preprocess.vis_processor"):
        if "image_size" in spec or _takes_image_size(str(spec.name)):
            spec.image_size = int(image_size)
    return prep


def check_overrides(overrides: Mapping[str, Any] | None, image_size: Any) -> None:
    """Refuse a ``preprocess.vis_processor.<split>.image_size`` override that contradicts the model's."""
    if not overrides or image_size is None:
        return
    flat = OmegaConf.create()
    for key, value in overrides.items():
        if key.startswith("preprocess."):
            OmegaConf.update(flat, key, value, merge=True, force_add=True)
    for key, spec in _vis_specs(OmegaConf.select(flat, "preprocess.vis_processor"), "preprocess.vis_processor", named=False):
        _check(f"{key}.image_size", spec.get("image_size"), image_size, "override image_size instead: the processors follow it")


def check_run(cfg: DictConfig) -> None:
    """Every image processor a run uses (train: when it trains; eval: when it evaluates) produces the
    model's image size, or sets none."""
    image_size = OmegaConf.select(cfg, "model.image_size", default=None)
    run = cfg.get("run") or {}
    used = set()
    if run.get("train_splits") and not run.get("evaluate", False):
        used.add("train")
    if run.get("valid_splits") or run.get("test_splits"):
        used.add("eval")
    if image_size is None or not used:
        return
    for name, ds in (cfg.get("datasets") or {}).items():
        if not isinstance(ds, DictConfig):
            continue
        for key, spec in _vis_specs(ds.get("vis_processor"), f"datasets.{name}.vis_processor"):
            if key.rsplit(".", 1)[-1] in used:
                _check(f"{key}.image_size", spec.get("image_size"), image_size, "set both to the same size")


def _check(key: str, value: Any, image_size: Any, fix: str) -> None:
    if value is not None and int(value) != int(image_size):
        raise ConfigError(f"{key}={value} contradicts model.image_size={image_size}: the model would get {value} px images; {fix}")
