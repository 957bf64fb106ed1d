"""What every BLIP head shares: building the ViT, the text transformer and the tokenizer from config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lavislite.common.errors import ConfigError
from lavislite.models.base_model import BaseModel

logger = logging.getLogger(__name__)


def _plain(node: Any) -> dict[str, Any]:
    if node is None:
        return {}
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    data.pop("_open_", None)  # the config schema's "accepts any key" marker, not an option
    return data  # type: ignore[return-value]


class BlipBase(BaseModel):
    """Base of the BLIP heads. The tokenizer is loaded on first use, so a model can be built (and
    its weights loaded) on a machine without the tokenizer files; text methods then need them."""

    def __init__(self, tokenizer: Any = "bert-base-uncased") -> None:
        super().__init__()
        # A name/path, or a ready tokenizer object (tests and the demo pass one).
        self._tokenizer_source = tokenizer if isinstance(tokenizer, (str, Path)) else None
        self._tokenizer = None if isinstance(tokenizer, (str, Path)) else tokenizer

    # -- tokenizer --------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from lavislite.models.tokenizer import init_tokenizer

            self._tokenizer = init_tokenizer(str(self._tokenizer_source))
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

    # -- builders from config ---------------------------------------------------------------
    @staticmethod
    def build_vision_encoder(cfg: Any) -> tuple[torch.nn.Module, int]:
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

    @staticmethod
    def build_med_config(cfg: Any, *, encoder_width: int | None = None, **extra: Any) -> Any:
        """The text transformer config: a preset name or a json path, plus ``med_overrides``."""
        from lavislite.common.config import resolve_config_path
        from lavislite.models.med import MedConfig

        source = str(cfg.get("med_config", "med_base"))
        overrides = {**_plain(cfg.get("med_overrides")), **extra}
        if encoder_width is not None:
            overrides["encoder_width"] = encoder_width
        try:
            if source.endswith(".json"):
                return MedConfig.from_json(resolve_config_path(source), **overrides)
            return MedConfig.preset(source, **overrides)
        except TypeError as exc:
            raise ConfigError(f"model.med_overrides: {exc}") from exc

    @classmethod
    def backbone_kwargs(cls, cfg: Any, tokenizer: Any = None) -> dict[str, Any]:
        """The constructor arguments every head shares: ViT, its width, the text config, the tokenizer."""
        vit, width = cls.build_vision_encoder(cfg)
        return {
            "visual_encoder": vit,
            "vision_width": width,
            "med_config": cls.build_med_config(cfg),
            "tokenizer": cls.tokenizer_source(cfg, tokenizer),
        }

    @staticmethod
    def tokenizer_source(cfg: Any, tokenizer: Any = None) -> Any:
        return tokenizer if tokenizer is not None else cfg.get("tokenizer", "bert-base-uncased")
