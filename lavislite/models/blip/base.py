"""What every BLIP head shares: building the vision encoder, the text transformer and the tokenizer from config.

Also registers BLIP's model parts: the ``blip_vit`` vision encoder and the ``bert_wordpiece`` tokenizer
(models/tokenizer.py); BLIP's checkpoint converter is in convert.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf

from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry
from lavislite.models import tokenizer as _tokenizers  # noqa: F401  (registers the bert_wordpiece tokenizer)
from lavislite.models.base_model import BaseModel

logger = logging.getLogger(__name__)


def _plain(node: Any) -> dict[str, Any]:
    if node is None:
        return {}
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    data.pop("_open_", None)  # the config schema's "accepts any key" marker, not an option
    return data  # type: ignore[return-value]


@registry.register_vision_encoder("blip_vit")
def build_blip_vit(cfg: Any) -> tuple[torch.nn.Module, int]:
    """BLIP's ViT from a model config: ``vit_type`` (base|large), ``image_size``, ``vit_grad_ckpt``,
    ``vit_ckpt_layer``, ``vit_drop_path_rate`` and ``vit_overrides`` (sizes for tiny models)."""
    from lavislite.models.vit import create_vit

    return create_vit(
        cfg.get("vit_type", "base"),
        int(cfg.get("image_size", 384)),
        use_grad_checkpointing=bool(cfg.get("vit_grad_ckpt", False)),
        ckpt_layer=int(cfg.get("vit_ckpt_layer", 0)),
        # null keeps the original per-size default (0 for base, 0.1 for large)
        drop_path_rate=cfg.get("vit_drop_path_rate"),
        **_plain(cfg.get("vit_overrides")),
    )


class BlipBase(BaseModel):
    """Base of the BLIP heads. The tokenizer is loaded on first use, so a model can be built (and
    its weights loaded) on a machine without the tokenizer files; text methods then need them."""

    checkpoint_converters: ClassVar[tuple[str, ...]] = ("blip_transformers",)
    VISION_ENCODER: ClassVar[str] = "blip_vit"  # the default of the config key ``vision_encoder``
    TOKENIZER: ClassVar[str] = "bert_wordpiece"  # the registered tokenizer loader for ``tokenizer`` names

    def __init__(self, tokenizer: Any = "bert-base-uncased") -> None:
        super().__init__()
        # A name/path, or a ready tokenizer object (tests and the demo pass one).
        self._tokenizer_source = tokenizer if isinstance(tokenizer, (str, Path)) else None
        self._tokenizer = None if isinstance(tokenizer, (str, Path)) else tokenizer

    # -- tokenizer --------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = registry.get_tokenizer(self.TOKENIZER)(str(self._tokenizer_source))
            vocab = self._text_vocab_size()
            if vocab is not None and len(self._tokenizer) > vocab:
                raise ConfigError(
                    f"tokenizer {self._tokenizer_source!r} has {len(self._tokenizer)} tokens but the text model's "
                    f"vocab_size is {vocab}; use the matching tokenizer or set model.med_overrides.vocab_size"
                )
        return self._tokenizer

    def _text_vocab_size(self) -> int | None:
        for module in self.modules():
            cfg = getattr(module, "config", None)
            if cfg is not None and hasattr(cfg, "vocab_size") and hasattr(cfg, "encoder_width"):
                return int(cfg.vocab_size)
        return None

    def tokenize(self, texts: list[str], *, padding: str = "longest", max_length: int = 35, first_token: int | None = None):
        """Tokenize a batch on the model's device; optionally overwrite position 0 ([ENC]/[DEC])."""
        if isinstance(texts, str):
            texts = [texts]
        tok = self.tokenizer(list(texts), padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
        ids = tok.input_ids.to(self.device)
        if first_token is not None:
            ids[:, 0] = first_token
        return ids, tok.attention_mask.to(self.device)

    EXAMPLE_TEXTS = ("a picture of a red circle on the left", "two small blue squares", "a big green triangle",
                     "a woman sitting on the beach with her dog")

    def example_images(self, batch_size: int) -> torch.Tensor:
        """Random images of the size the vision encoder was built for."""
        size = tuple(self.visual_encoder.patch_embed.img_size)
        return torch.randn(batch_size, 3, *size, device=self.device)

    def example_texts(self, batch_size: int) -> list[str]:
        return [self.EXAMPLE_TEXTS[i % len(self.EXAMPLE_TEXTS)] for i in range(batch_size)]

    # -- builders from config ---------------------------------------------------------------
    @classmethod
    def build_vision_encoder(cls, cfg: Any) -> tuple[torch.nn.Module, int]:
        """``(module, width)`` from the registered encoder the config's ``vision_encoder`` names."""
        return registry.get_vision_encoder(str(cfg.get("vision_encoder") or cls.VISION_ENCODER))(cfg)

    @classmethod
    def build_med_config(cls, cfg: Any, *, encoder_width: int | None = None, tokenizer: Any = None, **extra: Any) -> Any:
        """The text transformer config: a preset name or a json path, plus ``med_overrides``.

        Unless ``vocab_size`` is set (in ``med_overrides`` or ``extra``), it follows the tokenizer when that
        is at hand without a download (an object, or a local directory/vocab.txt): a model must embed every
        id its tokenizer produces, and a decoder with more rows would generate ids no token stands for.
        """
        from lavislite.common.config import resolve_config_path
        from lavislite.models.med import MedConfig

        source = str(cfg.get("med_config", "med_base"))
        overrides = {**_plain(cfg.get("med_overrides")), **extra}
        if encoder_width is not None:
            overrides["encoder_width"] = encoder_width
        if overrides.get("vocab_size") is None:
            overrides.pop("vocab_size", None)
            size = cls._local_tokenizer_size(tokenizer if tokenizer is not None else cfg.get("tokenizer"))
            if size is not None:
                overrides["vocab_size"] = size
        try:
            if source.endswith(".json"):
                return MedConfig.from_json(resolve_config_path(source), **overrides)
            return MedConfig.preset(source, **overrides)
        except TypeError as exc:
            raise ConfigError(f"model.med_overrides: {exc}") from exc

    @classmethod
    def _local_tokenizer_size(cls, tokenizer: Any) -> int | None:
        """``len(tokenizer)`` for an object or a local path; None for a hub name (loaded lazily, later)."""
        if tokenizer is None:
            return None
        if not isinstance(tokenizer, (str, Path)):
            try:
                return len(tokenizer)
            except TypeError:  # a stand-in without a length (tests): the config decides
                return None
        if not Path(tokenizer).expanduser().exists():
            return None
        return len(registry.get_tokenizer(cls.TOKENIZER)(str(tokenizer)))

    @classmethod
    def backbone_kwargs(cls, cfg: Any, tokenizer: Any = None) -> dict[str, Any]:
        """The constructor arguments every head shares: ViT, its width, the text config, the tokenizer."""
        vit, width = cls.build_vision_encoder(cfg)
        return {
            "visual_encoder": vit,
            "vision_width": width,
            "med_config": cls.build_med_config(cfg, tokenizer=cls.tokenizer_source(cfg, tokenizer)),
            "tokenizer": cls.tokenizer_source(cfg, tokenizer),
        }

    @staticmethod
    def tokenizer_source(cfg: Any, tokenizer: Any = None) -> Any:
        return tokenizer if tokenizer is not None else cfg.get("tokenizer", "bert-base-uncased")

    @classmethod
    def config_kwargs(cls, cfg: Any, tokenizer: Any = None) -> dict[str, Any]:
        """The constructor arguments of ``from_config``: the backbone, then every config key that names
        another constructor parameter; the rest keep the signature's defaults."""
        from lavislite.common.config import constructor_kwargs

        kwargs = cls.backbone_kwargs(cfg, tokenizer)
        return {**kwargs, **constructor_kwargs(cfg, cls, exclude=kwargs)}
