"""BLIP-2 stage-1 pre-training heads (``blip2`` = ``blip2_feature_extractor``, ``blip2_image_text_matching``).

One model, three losses (``BlipOutput(loss=itc+itm+lm, loss_itc, loss_itm, loss_lm)``), as LAVIS's
``Blip2Qformer``:

* ITC: the 32 query outputs (projected, normalised) against the text's [CLS] feature; an image-text score is
  the **max over the queries**, divided by the learned, unclamped ``temp``; cross-entropy with label
  smoothing 0.1 both ways (soft targets over equal ``image_id`` when the batch has them);
* ITM: queries and text in one bi-directional pass, the queries cross-attending to the image; one hard
  negative image per text and one hard negative text per image drawn from the ITC softmax; the logits are
  ``itm_head`` averaged over the queries;
* ITG: the text, [DEC] first, decoded causally on the cached keys/values of the ITC query pass (the text
  sees the queries, the queries never see the text); label smoothing 0.1.

The image encoder is frozen (``freeze_vit``) and ``ln_vision`` trains. The retrieval contract
(``encode_image``, ``encode_text``, ``itc_similarity``, ``itm_logits``) and ``extract_features`` serve the
tasks and the inference commands.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lavislite.common.dist import get_rank
from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.models.blip.momentum import all_gather_with_grad, concat_all_gather, sample_negatives
from lavislite.models.blip2.base import Blip2Base
from lavislite.models.blip2.qformer import copy_text_ffn_to_query, stage1_attention_mask
from lavislite.models.outputs import BlipOutput, BlipOutputFeatures

_TYPES = {
    "pretrain": "models/blip2/blip2_pretrain.yaml",
    "pretrain_vitL": "models/blip2/blip2_pretrain_vitL.yaml",
    "coco": "models/blip2/blip2_coco.yaml",
    "tiny": "models/blip2/blip2_tiny.yaml",
}


@registry.register_model("blip2_feature_extractor")
@registry.register_model("blip2")
class Blip2Qformer(Blip2Base):
    """LAVIS's ``Blip2Qformer``: the Q-Former with ITC/ITM/ITG heads on a frozen image encoder."""

    PRETRAINED_MODEL_CONFIG_DICT = _TYPES

    def __init__(self, *, embed_dim: int = 256, max_txt_len: int = 32, **base: Any) -> None:
        super().__init__(**base)
        hidden = self.Qformer.config.hidden_size
        self.vision_proj = nn.Linear(hidden, embed_dim)
        self.text_proj = nn.Linear(hidden, embed_dim)
        self.itm_head = nn.Linear(hidden, 2)
        self.temp = nn.Parameter(0.07 * torch.ones([]))
        self.max_txt_len = int(max_txt_len)
        copy_text_ffn_to_query(self.Qformer)

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any = None) -> "Blip2Qformer":
        def build() -> Blip2Qformer:
            return cls(**cls.base_kwargs(cfg, tokenizer), embed_dim=int(cfg.get("embed_dim", 256)),
                       max_txt_len=int(cfg.get("max_txt_len", 32)))

        model = cls.build_and_load(cfg, build)
        if cfg.get("vit_checkpoint"):
            model.load_vision_checkpoint(cfg.vit_checkpoint, strict=bool(cfg.get("strict_load", False)))
        return model

    # -- features ------------------------------------------------------------------------------
    def _samples(self, samples: dict, need_image: bool, need_text: bool) -> tuple[Tensor | None, list[str] | None]:
        image, texts = samples.get("image"), samples.get("text_input")
        if need_image and image is None:
            raise DataError(f"{type(self).__name__} needs samples['image'] (B, 3, H, W)")
        if need_text:
            if texts is None:
                raise DataError(f"{type(self).__name__} needs samples['text_input'] (a list of strings)")
            texts = [texts] if isinstance(texts, str) else list(texts)
        return image, texts

    def _itm_logits(self, image_embeds: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        """ITM logits (rows, 2): queries + text in one bi-directional pass, ``itm_head`` averaged over queries.

        ``image_embeds`` may hold one image per ``r`` contiguous text rows (grouped cross-attention)."""
        q = self.num_query_token
        queries = self.query_tokens.expand(ids.shape[0], -1, -1)
        out = self.Qformer.bert(ids, stage1_attention_mask("itm", mask, q), query_embeds=queries,
                                encoder_hidden_states=image_embeds)
        return self.itm_head(out.last_hidden_state[:, :q]).mean(dim=1)

    def _text_states(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.Qformer.bert(ids, mask, mode="text").last_hidden_state

    # -- training ------------------------------------------------------------------------------
    def forward(self, samples: dict) -> BlipOutput:
        """Stage-1 losses for ``samples['image']`` and ``samples['text_input']`` (``image_id`` optional)."""
        image, texts = self._samples(samples, True, True)
        image_embeds = self.image_embeds(image)
        batch = image_embeds.shape[0]
        if len(texts) != batch:
            raise DataError(f"{len(texts)} texts for {batch} images; give one text per image")
        query_output = self.query_output(image_embeds, use_cache=True)
        image_feats = F.normalize(self.vision_proj(query_output.last_hidden_state), dim=-1)  # (B, Q, E)
        ids, mask = self.tokenize(texts, padding="max_length", max_length=self.max_txt_len)
        text_feat = F.normalize(self.text_proj(self._text_states(ids, mask)[:, 0]), dim=-1)  # (B, E)

        # ITC: max over the queries, against every rank's batch
        image_feats_all, text_feat_all = concat_all_gather(image_feats), concat_all_gather(text_feat)
        sim_i2t = torch.einsum("bqe,te->btq", image_feats, text_feat_all).max(-1).values / self.temp
        sim_t2i = torch.einsum("te,bqe->tbq", text_feat, image_feats_all).max(-1).values / self.temp
        rank = get_rank()
        image_ids = samples.get("image_id")
        if image_ids is not None:
            image_ids = torch.as_tensor(image_ids, device=self.device).view(-1, 1)
            positives = image_ids == concat_all_gather(image_ids).t()
            targets = positives.float() / positives.float().sum(1, keepdim=True)
            targets = 0.9 * targets + 0.1 / targets.shape[1]
            loss_itc = (-(F.log_softmax(sim_t2i, 1) * targets).sum(1).mean() - (F.log_softmax(sim_i2t, 1) * targets).sum(1).mean()) / 2
        else:
            targets = torch.arange(rank * batch, rank * batch + batch, device=self.device)
            loss_itc = (F.cross_entropy(sim_i2t, targets, label_smoothing=0.1) + F.cross_entropy(sim_t2i, targets, label_smoothing=0.1)) / 2

        # ITM with hard negatives drawn from the ITC similarities (positives masked out)
        ids_world, mask_world = concat_all_gather(ids), concat_all_gather(mask)
        image_embeds_world = all_gather_with_grad(image_embeds)
        with torch.no_grad():
            s_t2i, s_i2t = sim_t2i.clone(), sim_i2t.clone()
            if image_ids is not None:
                s_t2i.masked_fill_(positives, -10000)
                s_i2t.masked_fill_(positives, -10000)
            else:
                s_t2i[:, rank * batch : rank * batch + batch].fill_diagonal_(-10000)
                s_i2t[:, rank * batch : rank * batch + batch].fill_diagonal_(-10000)
            neg_images = sample_negatives(F.softmax(s_t2i, dim=1))
            neg_texts = sample_negatives(F.softmax(s_i2t, dim=1))
        ids_all = torch.cat([ids, ids, ids_world[neg_texts]])
        mask_all = torch.cat([mask, mask, mask_world[neg_texts]])
        images_all = torch.cat([image_embeds, image_embeds_world[neg_images], image_embeds])
        logits = self._itm_logits(images_all, ids_all, mask_all)
        labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(self.device)
        loss_itm = F.cross_entropy(logits, labels)

        # ITG on the query pass's cache
        dec_ids = ids.clone()
        dec_ids[:, 0] = self.tokenizer.bos_token_id
        lm_labels = dec_ids.masked_fill(dec_ids == self.tokenizer.pad_token_id, -100)
        itg_mask = stage1_attention_mask("itg", mask, self.num_query_token)[:, self.num_query_token :]
        loss_lm = self.Qformer(dec_ids, itg_mask, past_key_values=query_output.past_key_values, labels=lm_labels,
                               mode="text", is_decoder=False, label_smoothing=0.1, return_logits=False).loss
        return BlipOutput(loss=loss_itc + loss_itm + loss_lm, loss_itc=loss_itc, loss_itm=loss_itm, loss_lm=loss_lm)

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def extract_features(self, samples: dict, mode: str = "multimodal") -> BlipOutputFeatures:
        """``image``: the query outputs (B, Q, H) and their normalised projections (B, Q, E); ``text``: the
        text states (B, L, H) and normalised per-token projections (use ``[:, 0]``); ``multimodal``: the
        query outputs of the joint pass (B, Q, H)."""
        if mode not in ("image", "text", "multimodal"):
            raise ConfigError(f"extract_features mode={mode!r}; use 'image', 'text' or 'multimodal'")
        image, texts = self._samples(samples, mode != "text", mode != "image")
        if mode == "image":
            embeds = self.query_output(self.image_embeds(image)).last_hidden_state
            return BlipOutputFeatures(image_embeds=embeds, image_embeds_proj=F.normalize(self.vision_proj(embeds), dim=-1))
        ids, mask = self.tokenize(texts, padding="longest", max_length=self.Qformer.config.max_position_embeddings)
        if mode == "text":
            states = self._text_states(ids, mask)
            return BlipOutputFeatures(text_embeds=states, text_embeds_proj=F.normalize(self.text_proj(states), dim=-1))
        q = self.num_query_token
        queries = self.query_tokens.expand(ids.shape[0], -1, -1)
        out = self.Qformer.bert(ids, stage1_attention_mask("itm", mask, q), query_embeds=queries,
                                encoder_hidden_states=self.image_embeds(image))
        return BlipOutputFeatures(multimodal_embeds=out.last_hidden_state[:, :q])

    def encode_image(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``(image_tokens (B, N, D), image_feats (B, Q, E))``: ``ln_vision`` tokens for ITM, the queries'
        unnormalised ITC projections."""
        tokens = self.image_embeds(image)
        return tokens, self.vision_proj(self.query_output(tokens).last_hidden_state)

    def encode_text(self, texts: Sequence[str], max_length: int = 35) -> tuple[Tensor, Tensor, Tensor]:
        """``(text_feats (T, E) unnormalised, input_ids, attention_mask)``; ``padding="max_length"``."""
        ids, mask = self.tokenize(texts, padding="max_length", max_length=max_length)
        return self.text_proj(self._text_states(ids, mask)[:, 0]), ids, mask

    def itc_similarity(self, image_feats: Tensor, text_feats: Tensor) -> Tensor:
        """(n_img, n_txt) float32: the max over the queries of the cosine (no temperature)."""
        image_feats = F.normalize(image_feats.float(), dim=-1)
        text_feats = F.normalize(text_feats.float(), dim=-1)
        return torch.einsum("iqe,te->itq", image_feats, text_feats).max(-1).values

    def itm_logits(self, image_tokens: Tensor, input_ids: Tensor, attention_mask: Tensor, image_atts: Tensor | None = None) -> Tensor:
        """ITM class-1 logits (b*r,), averaged over the queries, of ``r`` texts per image grouped per image."""
        if image_atts is not None and not bool(image_atts.all()):
            raise DataError("BLIP-2's ITM attends to every image token; image_atts must be all ones or None")
        return self._itm_logits(image_tokens, input_ids, attention_mask)[:, 1]


@registry.register_model("blip2_image_text_matching")
class Blip2ITM(Blip2Qformer):
    """LAVIS's ``Blip2ITM``: ``forward(samples, match_head)`` scores each image with its text."""

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any = None) -> "Blip2ITM":
        # the model types share blip2's yamls (as in LAVIS); a saved config must name this head to reload as it
        from omegaconf import DictConfig, open_dict

        if isinstance(cfg, DictConfig) and cfg.get("arch") in ("blip2", "blip2_feature_extractor"):
            with open_dict(cfg):
                cfg.arch = "blip2_image_text_matching"
        return super().from_config(cfg, tokenizer)

    def forward(self, samples: dict, match_head: str = "itm") -> Tensor:  # type: ignore[override]
        """``itm``: logits (B, 2) (the queries' mean); ``itc``: (B, 1) the max over the queries of the cosine
        between image i and text i (no temperature). Texts are padded to the longest (LAVIS does not pad, so
        unequal texts fail there)."""
        if match_head not in ("itm", "itc"):
            raise ConfigError(f"match_head={match_head!r}; use 'itm' (matching logits) or 'itc' (cosine similarity)")
        image, texts = self._samples(samples, True, True)
        image_embeds = self.image_embeds(image)
        if len(texts) != image_embeds.shape[0]:
            raise DataError(f"{len(texts)} texts for {image_embeds.shape[0]} images; give one text per image")
        ids, mask = self.tokenize(texts, padding="longest", max_length=self.max_txt_len)
        if match_head == "itm":
            return self._itm_logits(image_embeds, ids, mask)
        image_feats = F.normalize(self.vision_proj(self.query_output(image_embeds).last_hidden_state), dim=-1)
        text_feat = F.normalize(self.text_proj(self._text_states(ids, mask)[:, 0]), dim=-1)
        return torch.einsum("bqe,be->bq", image_feats, text_feat).max(-1, keepdim=True).values


__all__ = ["Blip2Qformer", "Blip2ITM"]
