"""BLIP's implementation of :class:`lavislite.models.protocols.RetrievalModel`, shared by
``blip_image_text_matching``, ``blip_retrieval`` and ``blip_pretrain``.

* :meth:`encode_image` -> all ViT tokens (kept for ITM) and the unnormalised ITC projection of [CLS];
* :meth:`encode_text` -> the unnormalised ITC projection of the unimodal [CLS] state, plus the token ids
  and mask (``padding="max_length"``, truncation; [CLS] stays at position 0);
* :meth:`itc_similarity` -> the cosine of the L2-normalised projections (no temperature): one vector
  per image;
* :meth:`itm_logits` -> the ITM "match" logit (``itm_head`` index 1, not a probability) with [ENC] in
  place of position 0. ``r`` texts per image are grouped contiguously, and the MED's grouped
  cross-attention serves them from the un-repeated image tokens.

A class using the mixin provides ``visual_encoder``, ``text_encoder`` (a MED ``BertModel``),
``vision_proj``, ``text_proj``, ``itm_head`` and the BlipBase ``tokenize``/``tokenizer``.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor

from lavislite.common.errors import DataError


class BlipRetrievalMethods:
    """``encode_image`` / ``encode_text`` / ``itc_similarity`` / ``itm_logits`` on BLIP's ITC/ITM modules."""

    def encode_image(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``(image_tokens (B, N, D), image_proj (B, E))``; ``image_proj = vision_proj(tokens[:, 0])``, unnormalised."""
        if not isinstance(image, Tensor) or image.dim() != 4:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise DataError(f"encode_image needs a (B, 3, H, W) image tensor, got {shape}")
        tokens = self.visual_encoder(image.to(self.device))
        return tokens, self.vision_proj(tokens[:, 0])

    def encode_text(self, texts: Sequence[str], max_length: int = 35) -> tuple[Tensor, Tensor, Tensor]:
        """``(text_proj (T, E) unnormalised, input_ids (T, L), attention_mask (T, L))`` of the unimodal
        encoder; ``padding="max_length"``, truncation at ``max_length``, [CLS] first (ITC)."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise DataError("encode_text got no texts; pass a non-empty list of strings")
        ids, mask = self.tokenize(list(texts), padding="max_length", max_length=int(max_length))
        states = self.text_encoder(ids, mask, mode="text").last_hidden_state
        return self.text_proj(states[:, 0]), ids, mask

    def itc_similarity(self, image_feats: Tensor, text_feats: Tensor) -> Tensor:
        """Cosine similarities (n_img, n_txt) float32 of the ITC projections (BLIP's retrieval ``sims``)."""
        if image_feats.dim() != 2 or text_feats.dim() != 2 or image_feats.shape[1] != text_feats.shape[1]:
            raise DataError(
                f"itc_similarity needs image_feats (n_img, E) and text_feats (n_txt, E) from encode_image/encode_text, "
                f"got {tuple(image_feats.shape)} and {tuple(text_feats.shape)}"
            )
        image = F.normalize(image_feats.float(), dim=-1)
        text = F.normalize(text_feats.float(), dim=-1).to(image.device)
        return image @ text.t()

    def itm_hidden(
        self, image_tokens: Tensor, input_ids: Tensor, attention_mask: Tensor, image_atts: Tensor | None = None
    ) -> Tensor:
        """The image-grounded encoder's position-0 state (b*r, H) with [ENC] in place of position 0."""
        n_img, n_txt = image_tokens.shape[0], input_ids.shape[0]
        if n_img == 0 or n_txt % n_img:
            raise DataError(
                f"itm_logits: {n_txt} texts for {n_img} images; give r texts per image, grouped contiguously per image"
            )
        ids = input_ids.to(self.device).clone()
        ids[:, 0] = self.tokenizer.enc_token_id
        states = self.text_encoder(
            ids, attention_mask.to(self.device),
            encoder_hidden_states=image_tokens.to(self.device),
            encoder_attention_mask=None if image_atts is None else image_atts.to(self.device),
        ).last_hidden_state
        return states[:, 0]

    def itm_logits(
        self, image_tokens: Tensor, input_ids: Tensor, attention_mask: Tensor, image_atts: Tensor | None = None
    ) -> Tensor:
        """ITM match logits (b*r,) of ``r`` texts per image (rows grouped per image); [ENC] replaces position 0."""
        return self.itm_head(self.itm_hidden(image_tokens, input_ids, attention_mask, image_atts))[:, 1]
