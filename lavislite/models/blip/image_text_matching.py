"""BLIP image-text matching (``blip_image_text_matching``; BLIP's ``BLIP_ITM``).

``forward(samples, match_head="itm")`` returns the ITM head's logits (B, 2) (index 1 = match; apply
``softmax(-1)[:, 1]`` for a probability); ``match_head="itc"`` returns the cosine matrix of the normalised
ITC features (B_img, T). It also implements :class:`lavislite.models.protocols.RetrievalModel` (``encode_image``, ``encode_text``, ``itc_similarity``,
``itm_logits``), so the retrieval tasks can evaluate it like ``blip_retrieval``.

Position 0 of the ITM text: the original ``blip_itm.py`` demo keeps [CLS] (and transformers'
``BlipForImageTextRetrieval`` does too), while LAVIS's ``BlipITM`` and BLIP's own retrieval evaluation use
[ENC], the token the ITM head was trained with. ``itm_first_token`` chooses: ``enc`` (default, LAVIS) or
``cls`` (to reproduce the BLIP demo / transformers numbers). ``itm_logits`` always uses [ENC].
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.models.blip.base import BlipBase
from lavislite.models.blip.retrieval_methods import BlipRetrievalMethods
from lavislite.models.med import BertModel, MedConfig

_FIRST_TOKENS = ("enc", "cls")


@registry.register_model("blip_image_text_matching")
class BlipITM(BlipRetrievalMethods, BlipBase):
    """ViT + image-grounded text encoder + ITC projections + ITM head (a BLIP retrieval checkpoint)."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "base": "models/blip/blip_itm_base.yaml",
        "large": "models/blip/blip_itm_large.yaml",
        "tiny": "models/blip/blip_itm_tiny.yaml",
    }

    def __init__(
        self,
        visual_encoder: nn.Module,
        vision_width: int,
        med_config: MedConfig,
        tokenizer: Any = "bert-base-uncased",
        embed_dim: int = 256,
        max_txt_len: int = 35,
        itm_first_token: str = "enc",
    ) -> None:
        super().__init__(tokenizer)
        if itm_first_token not in _FIRST_TOKENS:
            raise ConfigError(f"model.itm_first_token={itm_first_token!r}; use 'enc' (LAVIS, retrieval) or 'cls' (BLIP demo, transformers)")
        self.visual_encoder = visual_encoder
        self.text_encoder = BertModel(med_config.replace(encoder_width=vision_width), add_pooling_layer=False)
        text_width = med_config.hidden_size
        self.vision_proj = nn.Linear(vision_width, embed_dim)
        self.text_proj = nn.Linear(text_width, embed_dim)
        self.itm_head = nn.Linear(text_width, 2)
        self.max_txt_len = int(max_txt_len)
        self.itm_first_token = itm_first_token

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any = None) -> "BlipITM":
        return cls.build_and_load(cfg, lambda: cls(**cls.config_kwargs(cfg, tokenizer)))

    def _inputs(self, samples: dict) -> tuple[Tensor, list[str]]:
        image, texts = samples.get("image"), samples.get("text_input")
        if not isinstance(image, Tensor) or image.dim() != 4 or texts is None:
            raise DataError("blip_image_text_matching needs samples['image'] (B,3,H,W) and samples['text_input'] (list[str])")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise DataError("samples['text_input'] is empty; give at least one text")
        return image.to(self.device), texts

    def forward(self, samples: dict, match_head: str = "itm") -> Tensor:
        """``itm``: logits (T, 2) for ``r`` texts per image (T = r*B, grouped per image; r = 1 usually).
        ``itc``: cosine similarities (B, T) between every image and every text."""
        image, texts = self._inputs(samples)
        if match_head == "itm":
            if len(texts) % image.shape[0]:
                raise DataError(f"{len(texts)} texts for {image.shape[0]} images; give r texts per image, grouped per image")
            image_embeds = self.visual_encoder(image)
            ids, mask = self.tokenize(texts, padding="longest", max_length=self.max_txt_len)
            if self.itm_first_token == "enc":
                ids[:, 0] = self.tokenizer.enc_token_id
            states = self.text_encoder(ids, mask, encoder_hidden_states=image_embeds).last_hidden_state
            return self.itm_head(states[:, 0])
        if match_head == "itc":
            image_feat = F.normalize(self.encode_image(image)[1], dim=-1)
            ids, mask = self.tokenize(texts, padding="longest", max_length=self.max_txt_len)
            text_states = self.text_encoder(ids, mask, mode="text").last_hidden_state
            text_feat = F.normalize(self.text_proj(text_states[:, 0]), dim=-1)
            return image_feat @ text_feat.t()
        raise ConfigError(f"match_head={match_head!r}; use 'itm' (matching logits) or 'itc' (cosine similarity)")

    def example_samples(self, batch_size: int = 2) -> dict[str, Any]:
        """A random batch for ``forward`` (see BaseModel.example_samples)."""
        return {"image": self.example_images(batch_size), "text_input": self.example_texts(batch_size)}

    @torch.no_grad()
    def match_probability(self, samples: dict) -> Tensor:
        """``softmax(itm logits)[:, 1]``: the probability that each text matches its image (the BLIP demo's score)."""
        return self.forward(samples, match_head="itm").softmax(dim=-1)[:, 1]


__all__ = ["BlipITM"]
