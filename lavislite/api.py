"""The front door: load_model, load_preprocess, load_model_and_preprocess and the model zoo."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf

from lavislite.common.config import model_type_config
from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry


def _config(name: Any, model_type: str | None, checkpoint: str | None, overrides: Mapping[str, Any], strict: Any = None) -> DictConfig:
    """The ``{model:, preprocess:}`` config of a registered type or of a model folder (``model_type`` None)."""
    from lavislite.models import folder as model_folder
    from lavislite.processors import sizes

    if model_type is None:
        found = model_folder.find(name)
        if found is None:
            raise ConfigError(_not_a_folder(name))
        cfg = model_folder.load_config(found, overrides)
    else:
        cfg = model_type_config(registry.get_model_class(name), model_type, overrides)
    if checkpoint is not None:
        # An explicit checkpoint replaces the finetuned/pretrained weights named in the yaml (or the folder's).
        OmegaConf.update(cfg, "model.checkpoint", str(checkpoint), force_add=True)
    if strict is not None:
        OmegaConf.update(cfg, "model.strict_load", _STRICT_LOAD.get(strict, strict), force_add=True)
    image_size = cfg.model.get("image_size")
    sizes.check_overrides(overrides, image_size)
    cfg.preprocess = sizes.follow_image_size(cfg.get("preprocess"), image_size)
    return cfg


def _not_a_folder(name: Any) -> str:
    from lavislite.models import folder as model_folder

    path = Path(str(name)).expanduser()
    if path.is_dir():
        kind = " (a transformers BLIP directory: pass it as checkpoint= of a model type)" if (path / "config.json").is_file() else ""
        return (f"{name} is not a lavislite model folder: no {model_folder.CONFIG_FILE} in it or in {model_folder.RUN_SUBDIR}/{kind}. "
                f"Model folders are written by training runs and `lavislite export`; or give a model type: load_model(NAME, TYPE)")
    if str(name) in registry.models:
        types = ", ".join(registry.get_model_class(str(name)).model_types())
        return f"load_model({name!r}) needs a model type as well ({types}), e.g. load_model({name!r}, {types.split(', ')[0]!r})"
    arch, sep, mtype = str(name).partition(":")
    if sep and arch in registry.models:
        return f"load_model takes the name and the type apart: load_model({arch!r}, {mtype!r})"
    return f"{name!r} is neither a model folder (no such directory) nor a registered model name; `lavislite models` lists the names"


def _build(
    name: Any, model_type: str | None, checkpoint: str | None, overrides: Mapping[str, Any], strict: Any = None
) -> tuple[Any, DictConfig]:
    cfg = _config(name, model_type, checkpoint, overrides, strict)
    model = registry.get_model_class(cfg.model.arch if model_type is None else name).from_config(cfg.model)
    if getattr(model, "_model_cfg", None) is None:  # a plugin whose from_config does not use build_and_load
        model._model_cfg = cfg.model
    model._preprocess_cfg = cfg.preprocess  # what save_pretrained writes beside the weights
    model._imports = list(cfg.get("imports") or [])  # a folder's plugin modules, kept on re-export
    return model, cfg


# load_model's ``strict`` -> the config's ``strict_load`` (whose yaml ``false`` means "partial")
_STRICT_LOAD = {True: "exact", False: "any"}


def _place(model: Any, is_eval: bool, device: Any, dtype: Any) -> Any:
    """Move to ``device``, apply ``dtype`` (one dtype, a per-submodule mapping or a policy), freeze for eval."""
    from lavislite.models.precision import apply_dtype

    # cast before moving (a half-precision part never occupies the device in fp32); policies read
    # requires_grad, so this comes before the eval freeze
    model = apply_dtype(model, dtype).to(device)
    if is_eval:
        model.eval()
        model.requires_grad_(False)
    return model


def load_model(
    name: str | os.PathLike,
    model_type: str | None = None,
    is_eval: bool = True,
    device: Any = "cpu",
    checkpoint: str | None = None,
    dtype: Any = None,
    strict: bool | str | None = None,
    **overrides: Any,
) -> Any:
    """Build a registered model type, or a model folder, and load its weights.

    ``load_model("blip_caption", "base_coco")`` builds a registered type; ``load_model("path/to/folder")``
    (no type) rebuilds the model a training run or ``export_model`` wrote there, weights, tokenizer and
    processors included (a run directory holding ``model/`` works too). ``overrides`` replace keys of the
    type's ``model:`` config (for example ``image_size=224``,
    ``tokenizer="/models/bert-base-uncased"``, ``load_finetuned=False``); dotted keys starting with
    ``preprocess.`` reach the processors. ``checkpoint`` is a URL, a local ``.pth``/``.safetensors``
    file or a transformers BLIP directory/hub id, loaded instead of the yaml's weights.

    ``dtype``: a dtype or name (``"bf16"``), a mapping ``{submodule name: dtype}``, or a policy such as
    ``"frozen_bf16"`` (frozen parts in half precision, trainable parts in fp32); see
    ``lavislite.models.precision``. ``strict``: True = every checkpoint key must fit, False = load whatever
    fits, None = the config's ``strict_load`` (by default partial loads are reported and garbage is refused:
    see ``lavislite.common.checkpoint.load_checkpoint``). The load report is ``model.load_report``.
    """
    model, _ = _build(name, model_type, checkpoint, overrides, strict)
    return _place(model, is_eval, device, dtype)


def load_preprocess(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build ``(vis_processors, txt_processors)`` from a ``preprocess`` config section.

    Each has ``"train"`` and ``"eval"`` entries (an identity processor where the config has none).
    """
    from lavislite.processors.base_processor import BaseProcessor

    def build(section: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split in ("train", "eval"):
            node = section.get(split) if section is not None else None
            if node is None:
                out[split] = BaseProcessor()
                continue
            if "name" not in node:
                raise ConfigError(f"preprocess {split} processor config {OmegaConf.to_container(node)} has no 'name'")
            out[split] = registry.get_processor_class(node.name).from_config(node)
        return out

    if cfg is None:
        cfg = OmegaConf.create({})
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    return build(cfg.get("vis_processor")), build(cfg.get("text_processor"))


def load_model_and_preprocess(
    name: str | os.PathLike,
    model_type: str | None = None,
    is_eval: bool = True,
    device: Any = "cpu",
    checkpoint: str | None = None,
    dtype: Any = None,
    strict: bool | str | None = None,
    **overrides: Any,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """``(model, vis_processors, txt_processors)`` for one model type or model folder (see ``load_model``).

    The image processors produce ``model.image_size`` px images: they follow the model's size.
    """
    model, cfg = _build(name, model_type, checkpoint, overrides, strict)
    vis, txt = load_preprocess(cfg.get("preprocess"))
    return _place(model, is_eval, device, dtype), vis, txt


def export_model(model: Any, out_dir: str | os.PathLike, *, preprocess: Any = None) -> Path:
    """Write ``model`` as a model folder (weights, config, processors, tokenizer) that ``load_model(out_dir)``
    loads with no other argument. Same as ``model.save_pretrained(out_dir)``."""
    from lavislite.models import folder as model_folder

    return model_folder.save(model, out_dir, preprocess=preprocess)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    model_type: str
    config: str


class ModelZoo:
    """Every registered model name and type; ``print(model_zoo)`` shows a table."""

    def entries(self, builtin_only: bool = False) -> list[ZooEntry]:
        """Every (name, type); ``builtin_only`` leaves out models registered by user modules."""
        rows = []
        for name in registry.list_models():
            cls = registry.get_model_class(name)
            if builtin_only and not cls.__module__.startswith("lavislite."):
                continue
            for mtype in getattr(cls, "model_types", lambda: [])():
                rows.append(ZooEntry(name, mtype, cls.PRETRAINED_MODEL_CONFIG_DICT[mtype]))
        return rows

    def __iter__(self) -> Iterator[ZooEntry]:
        return iter(self.entries())

    def __str__(self) -> str:
        rows = self.entries()
        width = max([len("Architectures")] + [len(r.name) for r in rows])
        lines = ["=" * 60, f"{'Architectures':<{width}}  Types", "=" * 60]
        by_name: dict[str, list[str]] = {}
        for r in rows:
            by_name.setdefault(r.name, []).append(r.model_type)
        lines += [f"{n:<{width}}  {', '.join(t)}" for n, t in by_name.items()]
        return "\n".join(lines)

    __repr__ = __str__

    def markdown(self, builtin_only: bool = False) -> str:
        """A markdown table of every type: ViT, image size and the weights it loads by default."""
        from lavislite.common.config import CONFIG_ROOT, load_yaml, resolve_config_path

        lines = ["| name | model_type | ViT | image size | default weights |", "|---|---|---|---|---|"]
        for e in self.entries(builtin_only):
            path = resolve_config_path(e.config)
            m = load_yaml(path if path.is_absolute() else CONFIG_ROOT / e.config).get("model", {})
            url = (
                m.get("finetuned") if m.get("load_finetuned") and m.get("finetuned") else (m.get("pretrained") if m.get("load_pretrained") else None)
            )
            weights = f"`{str(url).rsplit('/', 1)[-1]}`" if url else "random init"
            vit = m.get("vit_type", m.get("vit_model", "-")) + (" (resized)" if m.get("vit_overrides") else "")
            lines.append(f"| `{e.name}` | `{e.model_type}` | {vit} | {m.get('image_size', '-')} | {weights} |")
        return "\n".join(lines)


model_zoo = ModelZoo()
