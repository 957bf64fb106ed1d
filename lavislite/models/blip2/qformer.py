"""BLIP-2's Querying Transformer (Q-Former), built on lavislite's MED.

The Q-Former is MED's ``BertLMHeadModel`` configured with cross-attention every ``cross_attention_freq``
layers (2: layers 0, 2, 4, ...), a query-only feed-forward branch (``intermediate_query``/``output_query``)
and ``num_query_token`` learned query embeddings that lead the sequence. Queries and text share the
self-attention; only the queries cross-attend to the image. Its keys are LAVIS's ``Qformer.bert.*`` /
``Qformer.cls.*`` and ``query_tokens``.

:func:`stage1_attention_mask` builds the three masks of stage-1 pre-training over [queries; text].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lavislite.common.errors import ConfigError
from lavislite.models.med import BertLMHeadModel, MedConfig

QFORMER_VOCAB = 30523  # bert-base-uncased + the [DEC] bos token
MASK_KINDS = ("itc", "itm", "itg")


def qformer_config(vision_width: int, *, cross_attention_freq: int = 2, text_input: bool = True, **overrides: Any) -> MedConfig:
    """bert-base-uncased as the Q-Former: vocabulary 30523, cross-attention K/V from ``vision_width``."""
    base = {"vocab_size": QFORMER_VOCAB, **overrides}
    return MedConfig.preset(
        "bert_base", **base, encoder_width=vision_width, add_cross_attention=True,
        cross_attention_freq=cross_attention_freq, query_ffn=True, text_input=text_input,
    )


def build_qformer(config: MedConfig, num_query_token: int) -> tuple[BertLMHeadModel, nn.Parameter]:
    """The Q-Former (``Qformer``) and its learned queries (``query_tokens``, normal(0, initializer_range))."""
    if int(num_query_token) < 1:
        raise ConfigError(f"num_query_token={num_query_token}; use an integer >= 1 (BLIP-2 uses 32)")
    qformer = BertLMHeadModel(config)
    query_tokens = nn.Parameter(torch.zeros(1, int(num_query_token), config.hidden_size))
    if not query_tokens.is_meta:
        query_tokens.data.normal_(mean=0.0, std=config.initializer_range)
    return qformer, query_tokens


@torch.no_grad()
def copy_text_ffn_to_query(qformer: nn.Module) -> int:
    """Stage-1 start: every ``*_query`` parameter takes the value of its text twin (LAVIS does this after
    loading BERT, so the query FFN starts as BERT's FFN). Returns how many tensors were copied."""
    params = dict(qformer.named_parameters())
    copied = 0
    for name, param in params.items():
        if "_query" in name and not param.is_meta:
            param.copy_(params[name.replace("_query", "")])
            copied += 1
    return copied


def stage1_attention_mask(kind: str, text_mask: Tensor, num_queries: int) -> Tensor:
    """The (B, Q + L, Q + L) 0/1 self-attention mask over [queries; text] for one stage-1 objective.

    Rows attend to columns where the mask is 1; padded text columns (``text_mask`` == 0) are always 0.

    * ``itc`` (uni-modal): queries see only queries, text only text; equal to LAVIS's two separate passes.
    * ``itm`` (bi-directional): every row sees every query and every non-padded text token.
    * ``itg`` (multimodal causal): queries see only queries; each text token sees all queries and the text
      up to itself. The text rows (``[:, Q:]``) are what a decoder pass on the queries' cache uses.
    """
    if kind not in MASK_KINDS:
        raise ConfigError(f"attention mask kind {kind!r}; use one of {', '.join(MASK_KINDS)}")
    if text_mask.dim() != 2:
        raise ValueError(f"text_mask must be (batch, text length), got shape {tuple(text_mask.shape)}")
    batch, length = text_mask.shape
    q, total = int(num_queries), int(num_queries) + length
    visible = torch.zeros(total, total, dtype=torch.bool, device=text_mask.device)
    visible[:q, :q] = True
    if kind == "itm":
        visible[:, :] = True
    elif kind == "itc":
        visible[q:, q:] = True
    else:
        visible[q:, :q] = True
        visible[q:, q:] = torch.ones(length, length, dtype=torch.bool, device=text_mask.device).tril()
    columns = torch.cat([text_mask.new_ones(batch, q), text_mask], dim=1).bool()
    return (visible[None] & columns[:, None, :]).long()


__all__ = ["QFORMER_VOCAB", "qformer_config", "build_qformer", "copy_text_ffn_to_query", "stage1_attention_mask"]
