"""The front door: load_model, load_preprocess, load_model_and_preprocess and the model zoo."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf

from lavislite.common.config import model_type_config
from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry


def _build(name: str, model_type: str, checkpoint: str | None, overrides: Mapping[str, Any]) -> tuple[Any, DictConfig]:
    model_cls = registry.get_model_class(name)
    cfg = model_type_config(model_cls, model_type, overrides)
    if checkpoint is not None:
        # An explicit checkpoint replaces the finetuned/pretrained weights named in the yaml.
        OmegaConf.update(cfg, "model.checkpoint", str(checkpoint), force_add=True)
    return model_cls.from_config(cfg.model), cfg


def _place(model: Any, is_eval: bool, device: Any, dtype: Any) -> Any:
    import torch

    if isinstance(dtype, str):
        try:
            dtype = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
                     "fp16": torch.float16, "float16": torch.float16}[dtype]
        except KeyError:
            raise ConfigError(f"dtype {dtype!r} is not one of fp32, bf16, fp16") from None
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    if is_eval:
        model.eval()
        model.requires_grad_(False)
    return model


def load_model(
    name: str,
    model_type: str,
    is_eval: bool = True,
    device: Any = "cpu",
    checkpoint: str | None = None,
    dtype: Any = None,
    **overrides: Any,
) -> Any:
    """Build a registered model type and load its weights.

    ``overrides`` replace keys of the type's ``model:`` config (for example ``image_size=224``,
    ``tokenizer="/models/bert-base-uncased"``, ``load_finetuned=False``); dotted keys starting with
    ``preprocess.`` reach the processors. ``checkpoint`` is a URL, a local ``.pth``/``.safetensors``
    file or a transformers BLIP directory/hub id, loaded instead of the yaml's weights.
    """
    model, _ = _build(name, model_type, checkpoint, overrides)
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
    name: str,
    model_type: str,
    is_eval: bool = True,
    device: Any = "cpu",
    checkpoint: str | None = None,
    dtype: Any = None,
    **overrides: Any,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """``(model, vis_processors, txt_processors)`` for one model type, processors matching the model."""
    model, cfg = _build(name, model_type, checkpoint, overrides)
    vis, txt = load_preprocess(cfg.get("preprocess"))
    return _place(model, is_eval, device, dtype), vis, txt


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
            url = m.get("finetuned") if m.get("load_finetuned") and m.get("finetuned") else (
                m.get("pretrained") if m.get("load_pretrained") else None)
            weights = f"`{str(url).rsplit('/', 1)[-1]}`" if url else "random init"
            lines.append(f"| `{e.name}` | `{e.model_type}` | {m.get('vit_type', '-') + (' (resized)' if m.get('vit_overrides') else '')} | {m.get('image_size', '-')} | {weights} |")
        return "\n".join(lines)


model_zoo = ModelZoo()
