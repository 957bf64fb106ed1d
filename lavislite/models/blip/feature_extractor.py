"""BLIP feature extraction (``blip_feature_extractor``; BLIP's ``BLIP_Base``).

``extract_features(samples, mode)`` with ``samples['image']`` and/or ``samples['text_input']``:

* ``image``: ViT tokens (B, 1+N, D) and their ITC projections, L2-normalised per token (B, 1+N, E);
  ``image_embeds_proj[:, 0]`` is the ITC image feature.
* ``text``: unimodal text states ([CLS] first; B, L, H) and normalised projections (B, L, E).
* ``multimodal``: image-grounded text states with [ENC] first (B, L, H); ``image_embeds`` is filled too.

Texts are tokenized ``padding="longest"`` without truncation below the position limit (the original), unless
``max_txt_len`` is set. This follows LAVIS's ``BlipFeatureExtractor`` (projections per token; ``temp`` kept).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.models.blip.base import BlipBase
from lavislite.models.med import BertModel, MedConfig
from lavislite.models.outputs import BlipOutputFeatures

_MODES = ("image", "text", "multimodal")


@registry.register_model("blip_feature_extractor")
class BlipFeatureExtractor(BlipBase):
    """ViT + text encoder + ITC projections; ``extract_features`` returns :class:`BlipOutputFeatures`."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "base": "models/blip/blip_feature_extractor_base.yaml",
        "tiny": "models/blip/blip_feature_extractor_tiny.yaml",
    }

    def __init__(
        self,
        visual_encoder: nn.Module,
        vision_width: int,
        med_config: MedConfig,
        tokenizer: Any = "bert-base-uncased",
        embed_dim: int = 256,
        max_txt_len: int | None = None,
        temp: float = 0.07,
    ) -> None:
        super().__init__(tokenizer)
        self.visual_encoder = visual_encoder
        self.text_encoder = BertModel(med_config.replace(encoder_width=vision_width), add_pooling_layer=False)
        self.vision_proj = nn.Linear(vision_width, embed_dim)
        self.text_proj = nn.Linear(med_config.hidden_size, embed_dim)
        self.temp = nn.Parameter(torch.tensor(float(temp)))
        self.max_txt_len = int(max_txt_len) if max_txt_len is not None else med_config.max_position_embeddings

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any = None) -> "BlipFeatureExtractor":
        return cls.build_and_load(cfg, lambda: cls(**cls.config_kwargs(cfg, tokenizer)))

    def _image(self, samples: dict, mode: str) -> Tensor:
        image = samples.get("image")
        if not isinstance(image, Tensor) or image.dim() != 4:
            raise DataError(f"extract_features(mode={mode!r}) needs samples['image'] as a (B,3,H,W) tensor")
        return image.to(self.device)

    def _texts(self, samples: dict, mode: str) -> list[str]:
        texts = samples.get("text_input")
        if texts is None or len(texts) == 0:
            raise DataError(f"extract_features(mode={mode!r}) needs samples['text_input'] (list[str])")
        return [texts] if isinstance(texts, str) else list(texts)

    @torch.no_grad()
    def extract_features(self, samples: dict, mode: str = "multimodal") -> BlipOutputFeatures:
        """Features of ``mode`` ('image', 'text' or 'multimodal'); see the module docstring."""
        if mode not in _MODES:
            raise ConfigError(f"extract_features mode={mode!r}; use one of {', '.join(_MODES)}")
        out = BlipOutputFeatures()
        if mode in ("image", "multimodal"):
            out.image_embeds = self.visual_encoder(self._image(samples, mode))
            if mode == "image":
                out.image_embeds_proj = F.normalize(self.vision_proj(out.image_embeds), dim=-1)
                return out
        texts = self._texts(samples, mode)
        if mode == "text":
            ids, mask = self.tokenize(texts, padding="longest", max_length=self.max_txt_len)
            out.text_embeds = self.text_encoder(ids, mask, mode="text").last_hidden_state
            out.text_embeds_proj = F.normalize(self.text_proj(out.text_embeds), dim=-1)
            return out
        if len(texts) != out.image_embeds.shape[0]:
            raise DataError(f"{len(texts)} texts for {out.image_embeds.shape[0]} images; multimodal features need one text per image")
        ids, mask = self.tokenize(texts, padding="longest", max_length=self.max_txt_len, first_token=self.tokenizer.enc_token_id)
        out.multimodal_embeds = self.text_encoder(ids, mask, encoder_hidden_states=out.image_embeds).last_hidden_state
        return out

    def example_samples(self, batch_size: int = 2) -> dict[str, Any]:
        """A random batch for ``extract_features`` (see BaseModel.example_samples)."""
        return {"image": self.example_images(batch_size), "text_input": self.example_texts(batch_size)}


__all__ = ["BlipFeatureExtractor"]
