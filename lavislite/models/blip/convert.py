"""BLIP's checkpoint converter: transformers-format BLIP state dicts -> the official BLIP key names.

Registered as the ``blip_transformers`` checkpoint converter, which every BLIP head names in its
``checkpoint_converters``, so the loader applies it to any checkpoint a BLIP model reads.

Handles ``BlipForConditionalGeneration``, ``BlipForQuestionAnswering``, ``BlipForImageTextRetrieval``,
``BlipModel`` (its ``text_model`` becomes ``text_encoder``; CLIP-style projections are dropped) and a bare
``BlipVisionModel``. Text keys (``text_encoder.*``, ``text_decoder.*``), ``vision_proj``, ``text_proj`` and
``itm_head`` already use the official names.
"""

from __future__ import annotations

import re
from typing import Collection

import torch

from lavislite.common.registry import registry

_VISION_PREFIX = "vision_model."
# a bare BlipVisionModel state dict has these top-level names
_BARE_VISION_ROOTS = ("embeddings.class_embedding", "embeddings.patch_embedding.", "embeddings.position_embedding", "post_layernorm.")

_DROP = re.compile(
    r"(^|\.)position_ids$"  # buffers
    r"|^logit_scale$|^visual_projection\.|^text_projection\."  # BlipModel's CLIP-style head
    r"|(^|\.)pooler\."  # BLIP never uses a pooler
)

# (pattern, replacement) applied in order to keys under vision_model.
_VISION_RULES = [
    (re.compile(r"^embeddings\.class_embedding$"), "cls_token"),
    (re.compile(r"^embeddings\.position_embedding(\.weight)?$"), "pos_embed"),
    (re.compile(r"^embeddings\.patch_embedding\."), "patch_embed.proj."),
    (re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.projection\."), r"blocks.\1.attn.proj."),
    (re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.qkv\."), r"blocks.\1.attn.qkv."),
    (re.compile(r"^encoder\.layers\.(\d+)\.layer_norm1\."), r"blocks.\1.norm1."),
    (re.compile(r"^encoder\.layers\.(\d+)\.layer_norm2\."), r"blocks.\1.norm2."),
    (re.compile(r"^encoder\.layers\.(\d+)\.mlp\."), r"blocks.\1.mlp."),
    (re.compile(r"^post_layernorm\."), "norm."),
]

# the LM head's tied pairs: (derived key, source key); filled in when a file stores only one side
_TIED = [
    ("text_decoder.cls.predictions.decoder.weight", "text_decoder.bert.embeddings.word_embeddings.weight"),
    ("text_decoder.cls.predictions.decoder.bias", "text_decoder.cls.predictions.bias"),
]


def is_hf_state_dict(sd: Collection[str] | dict[str, torch.Tensor]) -> bool:
    """True when ``sd`` uses transformers BLIP names (``vision_model.*``, ``text_model.*`` or a bare vision model)."""
    return any(
        k.startswith(_VISION_PREFIX) or k.startswith("text_model.") or k.startswith(_BARE_VISION_ROOTS) for k in sd
    )


def _vision_key(rest: str) -> str:
    for pattern, repl in _VISION_RULES:
        new, n = pattern.subn(repl, rest)
        if n:
            return "visual_encoder." + new
    raise KeyError(rest)


def convert_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return a new state dict with official BLIP key names (tensors are shared, not copied).

    Unknown vision keys raise ``CheckpointError``; non-vision keys other than the dropped HF-only ones
    pass through unchanged.
    """
    from lavislite.common.errors import CheckpointError

    bare_vision = not any(k.startswith(_VISION_PREFIX) for k in sd) and any(k.startswith(_BARE_VISION_ROOTS) for k in sd)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if _DROP.search(key):
            continue
        if bare_vision and not key.startswith(("text_", "vision_proj", "itm_head")):
            key = _VISION_PREFIX + key
        if key.startswith(_VISION_PREFIX):
            rest = key[len(_VISION_PREFIX) :]
            try:
                new_key = _vision_key(rest)
            except KeyError:
                raise CheckpointError(
                    f"transformers vision key {key!r} has no lavislite equivalent; is this a BLIP (not BLIP-2) checkpoint?"
                ) from None
            if new_key == "visual_encoder.pos_embed" and value.dim() == 2:
                value = value.unsqueeze(0)  # (N+1, D) embedding table -> (1, N+1, D)
            elif new_key == "visual_encoder.cls_token" and value.dim() != 3:
                value = value.reshape(1, 1, -1)
            out[new_key] = value
        elif key.startswith("text_model."):
            out["text_encoder." + key[len("text_model.") :]] = value
        else:
            out[key] = value
    for derived, source in _TIED:
        if derived not in out and source in out:
            out[derived] = out[source]
    return out


@registry.register_checkpoint_converter("blip_transformers")
class TransformersBlipConverter:
    """transformers' ``Blip*`` layouts (``vision_model.*``, ``text_model.*``) -> official BLIP names."""

    name = "blip_transformers"
    detect = staticmethod(is_hf_state_dict)
    convert = staticmethod(convert_hf_state_dict)
