"""BLIP-2 checkpoint keys: transformers' ``Blip2*`` names -> LAVIS's names (this family's model names).

LAVIS ``.pth`` files already use the model's names (``visual_encoder.*``, ``ln_vision.*``, ``Qformer.bert.*``,
``Qformer.cls.*``, ``query_tokens``, ``vision_proj``, ``text_proj``, ``itm_head``, ``temp``). transformers
(``Blip2Model``, ``Blip2ForImageTextRetrieval``, ``Blip2VisionModel``, ...) renames them; the rules below
invert its conversion script:

| transformers | LAVIS |
|---|---|
| ``vision_model.embeddings.{class_embedding, position_embedding, patch_embedding}`` | ``visual_encoder.{cls_token, pos_embed, patch_embed.proj}`` |
| ``vision_model.encoder.layers.{i}.{layer_norm1, layer_norm2, self_attn.projection}`` | ``visual_encoder.blocks.{i}.{norm1, norm2, attn.proj}`` |
| ``...self_attn.qkv.bias`` (q, k, v) | ``attn.q_bias``, ``attn.v_bias`` (k part dropped: softmax cancels it; converted files hold zeros) |
| ``vision_model.post_layernorm`` | ``ln_vision`` |
| ``qformer.layernorm`` / ``embeddings.{word,position}_embeddings`` | ``Qformer.bert.embeddings.{LayerNorm, word_embeddings, position_embeddings}`` |
| ``qformer.encoder.layer.{i}.{attention,crossattention}.attention.*`` | ``Qformer.bert.encoder.layer.{i}.{attention,crossattention}.self.*`` |
| ``vision_projection`` / ``text_projection`` | ``vision_proj`` / ``text_proj`` |
"""

from __future__ import annotations

import re

import torch

from lavislite.common.registry import registry

_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^vision_model\.embeddings\.class_embedding$"), "visual_encoder.cls_token"),
    (re.compile(r"^vision_model\.embeddings\.position_embedding$"), "visual_encoder.pos_embed"),
    (re.compile(r"^vision_model\.embeddings\.patch_embedding\."), "visual_encoder.patch_embed.proj."),
    (re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\."), r"visual_encoder.blocks.\1.norm1."),
    (re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\."), r"visual_encoder.blocks.\1.norm2."),
    (re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\."), r"visual_encoder.blocks.\1.attn.proj."),
    (re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.weight$"), r"visual_encoder.blocks.\1.attn.qkv.weight"),
    (re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.mlp\."), r"visual_encoder.blocks.\1.mlp."),
    (re.compile(r"^vision_model\.post_layernorm\."), "ln_vision."),
    (re.compile(r"^qformer\.layernorm\."), "Qformer.bert.embeddings.LayerNorm."),
    (re.compile(r"^embeddings\.(word_embeddings|position_embeddings)\."), r"Qformer.bert.embeddings.\1."),
    (re.compile(r"^qformer\.encoder\.layer\.(\d+)\.(attention|crossattention)\.attention\."), r"Qformer.bert.encoder.layer.\1.\2.self."),
    (re.compile(r"^qformer\.encoder\."), "Qformer.bert.encoder."),
    (re.compile(r"^vision_projection\."), "vision_proj."),
    (re.compile(r"^text_projection\."), "text_proj."),
]
_QKV_BIAS = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.bias$")
_DROPPED = re.compile(r"(^|\.)position_ids$")


def is_hf_blip2_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    """True when ``sd`` uses transformers' BLIP-2 names (a ``qformer.*`` or EVA ``self_attn.qkv`` key)."""
    return any(k.startswith("qformer.") or (k.startswith("vision_model.") and ".self_attn.qkv." in k) for k in sd)


def convert_hf_blip2_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers BLIP-2 keys -> LAVIS keys. Keys no rule covers (e.g. ``language_model.*`` before the
    stage-2 heads exist) are kept, so the loader reports them as unexpected by name."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if _DROPPED.search(key):
            continue
        match = _QKV_BIAS.match(key)
        if match:
            q, _, v = value.chunk(3)
            out[f"visual_encoder.blocks.{match.group(1)}.attn.q_bias"] = q
            out[f"visual_encoder.blocks.{match.group(1)}.attn.v_bias"] = v
            continue
        for pattern, repl in _RULES:
            new, n = pattern.subn(repl, key)
            if n:
                out[new] = value
                break
        else:
            out[key] = value
    return out


__all__ = ["is_hf_blip2_state_dict", "convert_hf_blip2_state_dict"]


@registry.register_checkpoint_converter("blip2_transformers")
class TransformersBlip2Converter:
    """transformers' ``Blip2*`` layouts (``qformer.*``, ``vision_model.*`` with fused qkv) -> LAVIS names."""

    name = "blip2_transformers"
    detect = staticmethod(is_hf_blip2_state_dict)
    convert = staticmethod(convert_hf_blip2_state_dict)
