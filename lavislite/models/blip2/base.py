"""What every BLIP-2 head shares: the frozen image encoder, ``ln_vision``, the Q-Former and its queries, the
tokenizer, and checkpoint adaptation (transformers names, position-embedding sizes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.models.base_model import BaseModel
from lavislite.models.blip2 import convert as _converters  # noqa: F401  (registers blip2_transformers)
from lavislite.models.blip2.qformer import build_qformer, qformer_config
from lavislite.models.blip2.vision import LayerNormFp32, resize_position_embedding
from lavislite.models.med import MedConfig, MedOutput


def _plain(node: Any) -> dict[str, Any]:
    if node is None:
        return {}
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    data.pop("_open_", None)  # the config schema's "accepts any key" marker, not an option
    return data  # type: ignore[return-value]


class Blip2Base(BaseModel):
    """Image encoder -> ``ln_vision`` -> Q-Former with ``num_query_token`` learned queries.

    A frozen encoder (``freeze_vit``) has no gradients and stays in eval mode whatever ``train()`` is
    called with. The tokenizer (BERT uncased + ``[DEC]`` as bos) is loaded on first use.
    """

    checkpoint_converters = ("blip2_transformers",)

    def __init__(
        self,
        *,
        visual_encoder: nn.Module,
        qformer_config: MedConfig,
        num_query_token: int = 32,
        freeze_vit: bool = True,
        ln_vision_eps: float = 1e-5,
        tokenizer: Any = "bert-base-uncased",
    ) -> None:
        super().__init__()
        self.visual_encoder = visual_encoder
        self.ln_vision = LayerNormFp32(visual_encoder.num_features, eps=ln_vision_eps)
        self.Qformer, self.query_tokens = build_qformer(qformer_config, num_query_token)
        self.freeze_vit = bool(freeze_vit)
        if self.freeze_vit:
            for p in self.visual_encoder.parameters():
                p.requires_grad_(False)
            self.visual_encoder.eval()
        self._tokenizer_source = tokenizer if isinstance(tokenizer, (str, Path)) else None
        self._tokenizer = None if isinstance(tokenizer, (str, Path)) else tokenizer

    def train(self, mode: bool = True) -> "Blip2Base":
        super().train(mode)
        if self.freeze_vit:
            self.visual_encoder.eval()  # LAVIS replaces its train() with a no-op
        return self

    # -- building from config ------------------------------------------------------------------
    @staticmethod
    def vision_from_config(cfg: Any) -> nn.Module:
        """The registered vision encoder ``vit_model`` names, for ``image_size``, in ``vit_precision``."""
        module, _ = registry.get_vision_encoder(str(cfg.get("vit_model", "eva_clip_g")))(cfg)
        return module

    @staticmethod
    def qformer_config_from(cfg: Any, vision_width: int) -> MedConfig:
        try:
            return qformer_config(
                vision_width, cross_attention_freq=int(cfg.get("cross_attention_freq", 2)), **_plain(cfg.get("qformer_overrides"))
            )
        except TypeError as exc:
            raise ConfigError(f"model.qformer_overrides: {exc}") from exc

    @classmethod
    def base_kwargs(cls, cfg: Any, tokenizer: Any = None) -> dict[str, Any]:
        """The constructor arguments every BLIP-2 head reads from its ``model`` config."""
        vit = cls.vision_from_config(cfg)
        return {
            "visual_encoder": vit,
            "qformer_config": cls.qformer_config_from(cfg, vit.num_features),
            "num_query_token": int(cfg.get("num_query_token", 32)),
            "freeze_vit": bool(cfg.get("freeze_vit", True)),
            "tokenizer": tokenizer if tokenizer is not None else cfg.get("tokenizer", "bert-base-uncased"),
        }

    # -- tokenizer -----------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from lavislite.models.tokenizer import init_tokenizer

            self._tokenizer = init_tokenizer(str(self._tokenizer_source))
        vocab = self.Qformer.config.vocab_size
        if self._tokenizer.bos_token_id is None or self._tokenizer.bos_token_id >= vocab:
            raise ConfigError(
                f"the tokenizer's [DEC] id {self._tokenizer.bos_token_id} does not fit the Q-Former vocabulary of {vocab}; "
                "use the matching tokenizer or set model.qformer_overrides.vocab_size"
            )
        return self._tokenizer

    def tokenize(self, texts: Any, *, padding: str = "max_length", max_length: int = 32) -> tuple[Tensor, Tensor]:
        """Token ids and mask on the model's device ([CLS] first, right padding and truncation)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise DataError("no texts given; pass at least one string")
        tok = self.tokenizer(texts, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
        return tok.input_ids.to(self.device), tok.attention_mask.to(self.device)

    # -- the shared forward pieces ---------------------------------------------------------------
    def image_embeds(self, image: Tensor) -> Tensor:
        """``ln_vision(visual_encoder(image))`` in fp32: (B, 1 + N, vision width)."""
        if not isinstance(image, Tensor) or image.dim() != 4:
            raise DataError(f"samples['image'] must be a (B, 3, H, W) tensor, got {getattr(image, 'shape', type(image))}")
        return self.ln_vision(self.visual_encoder(image.to(self.device))).float()

    def query_output(self, image_embeds: Tensor, use_cache: bool = False) -> MedOutput:
        """The queries' pass over the image: (B, Q, hidden) and, with ``use_cache``, their K/V for ITG."""
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        return self.Qformer.bert(query_embeds=queries, encoder_hidden_states=image_embeds, use_cache=use_cache)

    @property
    def num_query_token(self) -> int:
        return self.query_tokens.shape[1]

    def example_samples(self, batch_size: int = 2) -> dict[str, Any]:
        """A random batch for ``forward`` (see BaseModel.example_samples)."""
        size = self.visual_encoder.img_size
        texts = ("a picture of a red circle on the left", "two small blue squares")
        return {"image": torch.randn(batch_size, 3, size, size, device=self.device),
                "text_input": [texts[i % len(texts)] for i in range(batch_size)]}

    # -- checkpoints -----------------------------------------------------------------------------
    def load_vision_checkpoint(self, source: Any, strict: bool = False) -> Any:
        """Load the image encoder from its own file (LAVIS's ``eva_vit_g.pth`` / ``clip_vit_L.pth``: bare
        encoder keys). Blocks beyond the ones built (the 40th EVA block, the 24th CLIP block) are dropped, as
        LAVIS's non-strict load does; the position embedding is resized to ``image_size``."""
        from lavislite.common.checkpoint import read_state_dict

        sd = read_state_dict(source) if not isinstance(source, dict) else dict(source)
        kept: dict[str, Tensor] = {}
        own = set(self.visual_encoder.state_dict())
        for key, value in sd.items():
            bare = key[len("visual_encoder."):] if key.startswith("visual_encoder.") else key
            if bare.startswith(("blocks.", "transformer.resblocks.")) and bare not in own:
                continue  # a block LAVIS does not build
            kept["visual_encoder." + bare] = value
        return self.load_checkpoint(kept, strict=False) if not strict else self._load_vision_strict(kept, own)

    def _load_vision_strict(self, sd: dict[str, Tensor], own: set[str]) -> Any:
        missing = sorted(own - {k[len("visual_encoder."):] for k in sd})
        unexpected = sorted(k for k in sd if k[len("visual_encoder."):] not in own)
        if missing or unexpected:
            raise DataError(f"vision checkpoint does not fit {type(self.visual_encoder).__name__}: missing {missing[:5]}, unexpected "
                            f"{unexpected[:5]}")
        return self.load_checkpoint(sd, strict=False)

    def adapt_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Position embeddings resized to this model's image size (EVA bicubic with ``align_corners=False``,
        CLIP with ``True``, as LAVIS does when it builds). transformers names were already converted by
        the registered ``blip2_transformers`` converter."""
        sd = dict(state_dict)
        for key, align in (("visual_encoder.pos_embed", False), ("visual_encoder.positional_embedding", True)):
            own = getattr(self.visual_encoder, key.split(".")[1], None)
            if key in sd and own is not None and sd[key].shape != own.shape:
                try:
                    sd[key] = resize_position_embedding(sd[key], own.shape[-2], align_corners=align)
                except ValueError as exc:
                    raise DataError(f"checkpoint key {key}: {exc}") from exc
        return sd


__all__ = ["Blip2Base"]
