"""MED: BLIP's BERT with cross-attention, one module for every text role of the BLIP family.

The same classes build the unimodal text encoder (``mode="text"``), the image-grounded encoder
(``mode="multimodal"``), the image-grounded decoder (``BertLMHeadModel``, ``is_decoder=True``), the
NLVR2 twin cross-attention encoder (``MedConfig.num_cross_images=2``) and BLIP-2's Q-Former
(``cross_attention_freq=2``, ``query_ffn=True``: learned query embeddings are prepended to the text, only
the query rows cross-attend to the image and they take their own feed-forward branch
``intermediate_query``/``output_query``). Parameter names follow the original BLIP/BLIP-2 checkpoints
(``embeddings.*``, ``encoder.layer.{i}.attention|crossattention|intermediate[_query]|output[_query].*``,
``cls.predictions.*``), so official state dicts load under ``text_encoder.`` / ``text_decoder.`` /
``Qformer.bert.``.

Attention runs through ``F.scaled_dot_product_attention`` with the original additive masks (self-attention
``(1-m)*-10000``, cross-attention ``(1-m)*-1e9``; ``-1e4`` in fp16). For generation the cache keeps the
self-attention K/V per text row and the cross-attention K/V once per *image*; text rows that are ``r``
contiguous copies per image (beams, answer candidates) attend to the un-repeated image states (grouped
cross-attention), so image states are never materialised ``r`` times.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lavislite.common.errors import ConfigError

MED_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "models" / "med"

_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),  # exact (erf) GELU, as BERT/BLIP
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
    "silu": lambda: nn.SiLU(),
    "swish": lambda: nn.SiLU(),
}

SELF_ATTN_NEG = -10000.0  # BLIP/HF-4.15 get_extended_attention_mask


def _cross_attn_neg(dtype: torch.dtype) -> float:
    # HF-4.15 invert_attention_mask: -1e9 in fp32, -1e4 in fp16 (where -1e9 would overflow to -inf)
    return -1e4 if dtype == torch.float16 else -1e9


# ------------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------------
@dataclass
class MedConfig:
    """Hyper-parameters of MED (BERT + cross-attention). Defaults = BLIP's ``med_config.json``."""

    vocab_size: int = 30524
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    encoder_width: int = 768
    add_cross_attention: bool = True
    num_cross_images: int = 1  # 2 = NLVR2 twin cross-attention (self0/self1, dense0/dense1, merge_layer)
    merge_layer_start: int = 6  # twin config: layers >= this merge with a Linear(2H, H) instead of averaging
    cross_attention_freq: int = 1  # layer i has cross-attention when i % freq == 0 (BLIP 1, BLIP-2's Q-Former 2)
    query_ffn: bool = False  # Q-Former: a query-only FFN branch; only the query rows cross-attend
    text_input: bool = True  # False = BLIP-2 stage-2 Q-Former: no word/position embeddings, no text FFN

    PRESETS: ClassVar[dict[str, str]] = {
        "med_base": "med_config.json",
        "med_large": "med_large_config.json",
        "bert_base": "bert_config.json",
    }
    # keys of the original json files (and of HF BERT configs) that do not change this architecture
    _IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "architectures", "model_type", "type_vocab_size", "transformers_version", "torch_dtype", "dtype",
            "gradient_checkpointing", "use_cache", "classifier_dropout", "_name_or_path", "bos_token_id",
            "eos_token_id", "sep_token_id", "is_decoder", "label_smoothing", "chunk_size_feed_forward",
        }
    )
    _ALIASES: ClassVar[dict[str, str]] = {  # transformers BlipTextConfig / Blip2QFormerConfig names
        "encoder_hidden_size": "encoder_width",
        "cross_attention_frequency": "cross_attention_freq",
        "use_qformer_text_input": "text_input",
    }

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"MedConfig: hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ConfigError(f"MedConfig: hidden_act={self.hidden_act!r} is not one of {sorted(_ACTIVATIONS)}")
        if self.num_cross_images not in (1, 2):
            raise ConfigError(f"MedConfig: num_cross_images={self.num_cross_images}; use 1, or 2 for NLVR2 twin cross-attention")
        if not isinstance(self.cross_attention_freq, int) or self.cross_attention_freq < 1:
            raise ConfigError(f"MedConfig: cross_attention_freq={self.cross_attention_freq!r}; use an integer >= 1 (1 = every layer)")
        if self.query_ffn and self.num_cross_images != 1:
            raise ConfigError("MedConfig: query_ffn=true (Q-Former) cannot be combined with num_cross_images=2 (NLVR2 twin cross-attention)")
        if not self.text_input and not self.query_ffn:
            raise ConfigError("MedConfig: text_input=false leaves only the query branch; it needs query_ffn=true")

    def has_cross_attention(self, layer: int) -> bool:
        """Whether encoder layer ``layer`` holds a cross-attention block."""
        return self.add_cross_attention and layer % self.cross_attention_freq == 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def replace(self, **overrides: Any) -> "MedConfig":
        """A copy with ``overrides`` applied (validated like the constructor)."""
        return self.from_dict({**dataclasses.asdict(self), **overrides}, source="MedConfig.replace")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>", **overrides: Any) -> "MedConfig":
        """Build from original med/bert config keys; irrelevant HF keys are ignored, unknown keys refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in {**d, **overrides}.items():
            key = cls._ALIASES.get(key, key)
            if key in names:
                kwargs[key] = value
            elif key == "add_type_embeddings":
                if value:
                    raise ConfigError(f"{source}: add_type_embeddings=true is not supported (BLIP has no token-type embeddings); set it to false")
            elif key == "position_embedding_type":
                if value != "absolute":
                    raise ConfigError(f"{source}: position_embedding_type={value!r}; only 'absolute' is supported")
            elif key not in cls._IGNORED_KEYS:
                raise ConfigError(
                    f"{source}: unknown MED config key {key!r}. Valid keys: {', '.join(sorted(names))} "
                    f"(ignored: {', '.join(sorted(cls._IGNORED_KEYS))}). Remove or rename it."
                )
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path, **overrides: Any) -> "MedConfig":
        """Read an original ``med_config.json`` / ``bert_config.json`` (or a lavislite preset file)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"MED config file {path} does not exist; give a path to a med_config.json-style file or a preset name {sorted(cls.PRESETS)}"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"MED config file {path} is not valid JSON: {e}") from e
        return cls.from_dict(data, source=str(path), **overrides)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "MedConfig":
        """``med_base`` (vocab 30524), ``med_large`` (encoder_width 1024) or ``bert_base`` (vocab 30522)."""
        if name not in cls.PRESETS:
            raise ConfigError(f"unknown MED preset {name!r}; valid presets: {', '.join(cls.PRESETS)}")
        return cls.from_json(MED_CONFIG_DIR / cls.PRESETS[name], **overrides)


# ------------------------------------------------------------------------------------------------
# outputs and cache
# ------------------------------------------------------------------------------------------------
KV = tuple[Tensor, Tensor]


@dataclass
class MedKVCache:
    """Generation cache.

    ``self_kv[l]``: layer l's self-attention (k, v), (B_text, heads, T, head_dim), one row per text row.
    ``cross_kv[l]``: the cross-attention (k, v) per image of layer l, (B_img, heads, N, head_dim), computed
    once; keyed by layer index, holding only the layers that have cross-attention (every
    ``cross_attention_freq``-th).
    ``cross_masks``: the additive cross-attention mask per image, (B_img, 1, 1, N) or None (no padding).
    ``num_queries``: how many of the cached positions are Q-Former queries (they lead the sequence and
    carry no position embedding, so text positions continue from ``length - num_queries``).
    """

    self_kv: list[KV]
    cross_kv: dict[int, list[KV]] | None = None
    cross_masks: list[Tensor | None] | None = None
    num_queries: int = 0

    @property
    def length(self) -> int:
        """Number of cached text positions."""
        return self.self_kv[0][0].shape[2] if self.self_kv else 0

    @property
    def batch_size(self) -> int:
        return self.self_kv[0][0].shape[0]

    def reorder(self, index: Tensor) -> "MedKVCache":
        """Select text rows (beam reordering, or the B -> B*num_beams expansion); image K/V untouched.

        The caller keeps ``index`` within each image's contiguous group of rows.
        """
        index = index.to(self.self_kv[0][0].device)
        self_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.self_kv]
        return MedKVCache(self_kv, self.cross_kv, self.cross_masks, self.num_queries)


def reorder_cache(past_key_values: MedKVCache, index: Tensor) -> MedKVCache:
    """Functional form of :meth:`MedKVCache.reorder`."""
    return past_key_values.reorder(index)


@dataclass
class MedOutput:
    last_hidden_state: Tensor
    past_key_values: MedKVCache | None = None
    pooler_output: Tensor | None = None


@dataclass
class LMOutput:
    loss: Tensor | None
    logits: Tensor | None
    past_key_values: MedKVCache | None = None


# ------------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------------
class BertEmbeddings(nn.Module):
    """Word + absolute position embeddings, LayerNorm, dropout (BLIP has no token-type embeddings).

    Q-Former query embeddings are prepended after the text sum (no position embedding) and pass the
    same LayerNorm and dropout; a stage-2 Q-Former (``text_input=False``) has only the LayerNorm.
    """

    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        if config.text_input:
            self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        # official checkpoints also store a `position_ids` arange buffer; the checkpoint loader drops it and
        # positions are made on the fly here (nothing to initialise when the model is built on the meta device)
        self.max_positions = config.max_position_embeddings

    def forward(
        self,
        input_ids: Tensor | None = None,
        past_length: int = 0,
        inputs_embeds: Tensor | None = None,
        query_embeds: Tensor | None = None,
    ) -> Tensor:
        if input_ids is None and inputs_embeds is None:  # queries only
            return self.dropout(self.LayerNorm(query_embeds))
        if not hasattr(self, "word_embeddings"):
            raise ValueError("this MED has no text input (text_input=false, a stage-2 Q-Former); pass only query_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        length = inputs_embeds.shape[1]
        if past_length + length > self.max_positions:
            raise ValueError(
                f"text of {past_length + length} tokens exceeds max_position_embeddings={self.max_positions}; "
                "truncate the text (tokenizer max_length) or shorten generation max_length"
            )
        pos = torch.arange(past_length, past_length + length, device=inputs_embeds.device)[None]
        x = inputs_embeds + self.position_embeddings(pos)
        if query_embeds is not None:
            x = torch.cat([query_embeds.to(x.dtype), x], dim=1)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head attention core: query from the text, key/value from ``kv_width``-wide states.

    When the query batch is ``r`` times the key batch (text rows grouped contiguously per image), the
    queries are folded to (B_kv, heads, r*L, d) so each image's K/V serve its ``r`` rows unrepeated.
    """

    def __init__(self, config: MedConfig, kv_width: int) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(kv_width, config.hidden_size)
        self.value = nn.Linear(kv_width, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(*x.shape[:-1], self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, states: Tensor) -> KV:
        return self._heads(self.key(states)), self._heads(self.value(states))

    def forward(self, hidden: Tensor, kv: KV, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        q = self._heads(self.query(hidden))  # (Bq, h, L, d)
        k, v = kv
        bq, h, length, d = q.shape
        bk = k.shape[0]
        group = bq // bk
        if group * bk != bq:
            raise ValueError(
                f"attention: text batch {bq} is not a multiple of the key/value (image) batch {bk}; the text rows "
                "must be r contiguous copies per image (as repeat_interleave(r) gives)"
            )
        if group > 1:
            q = q.view(bk, group, h, length, d).transpose(1, 2).reshape(bk, h, group * length, d)
        dropout_p = self.dropout_p if self.training else 0.0
        if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and not is_causal:
            out = _half_attention_cpu(q, k, v, attn_mask, dropout_p)
        else:
            if attn_mask is not None and attn_mask.dtype != q.dtype:
                attn_mask = attn_mask.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)
        if group > 1:
            out = out.view(bk, h, group, length, d).transpose(1, 2).reshape(bq, h, length, d)
        return out.transpose(1, 2).reshape(bq, length, h * d)


def _half_attention_cpu(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout_p: float = 0.0) -> Tensor:
    """``dropout(softmax(q k^T / sqrt(d) + mask)) v`` with the scores and softmax in fp32, for bf16/fp16 on CPU.

    At the MED's sizes (a few queries per row when decoding, <= 40 text tokens) torch's CPU flash-attention
    kernel is 2-4x slower in bf16 than these two batched matrix products, and with attention dropout
    (training) SDPA's bf16 CPU path made a caption fine-tuning step's decoder 1.3-1.5x slower (bench/NOTES.md);
    fp32 and GPU inputs keep ``scaled_dot_product_attention``.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * (q.shape[-1] ** -0.5)
    if attn_mask is not None:
        scores = scores + attn_mask.float()
    probs = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p)
    return torch.matmul(probs.to(v.dtype), v)


class BertOutput(nn.Module):
    """Post-LN residual block ``LayerNorm(dropout(dense(x)) + residual)``.

    Used for ``attention.output`` / ``crossattention.output`` (in_width = hidden) and the FFN ``output``
    (in_width = intermediate). With ``num_inputs=2`` (NLVR2 twin cross-attention) it has ``dense0``/
    ``dense1`` and combines them by averaging, or by ``merge_layer`` (Linear(2H, H)) when ``merge``.
    """

    def __init__(self, config: MedConfig, in_width: int | None = None, num_inputs: int = 1, merge: bool = False) -> None:
        super().__init__()
        in_width = in_width or config.hidden_size
        self.num_inputs = num_inputs
        if num_inputs == 1:
            self.dense = nn.Linear(in_width, config.hidden_size)
        else:
            self.dense0 = nn.Linear(in_width, config.hidden_size)
            self.dense1 = nn.Linear(in_width, config.hidden_size)
            if merge:
                self.merge_layer = nn.Linear(2 * config.hidden_size, config.hidden_size)
        self.merge = merge
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor | Sequence[Tensor], residual: Tensor) -> Tensor:
        if self.num_inputs == 1:
            x = self.dense(hidden[0] if isinstance(hidden, (list, tuple)) else hidden)
        else:
            x0, x1 = self.dense0(hidden[0]), self.dense1(hidden[1])
            x = self.merge_layer(torch.cat([x0, x1], dim=-1)) if self.merge else (x0 + x1) / 2
        return self.LayerNorm(self.dropout(x) + residual)


BertSelfOutput = BertOutput  # the original's name for the attention output block; same structure


class BertAttention(nn.Module):
    """``self`` (or ``self0``/``self1`` for twin cross-attention) followed by ``output``."""

    def __init__(self, config: MedConfig, is_cross_attention: bool = False, num_inputs: int = 1, merge: bool = False) -> None:
        super().__init__()
        kv_width = config.encoder_width if is_cross_attention else config.hidden_size
        if num_inputs == 1:
            self.self = BertSelfAttention(config, kv_width)
        else:
            self.self0 = BertSelfAttention(config, kv_width)
            self.self1 = BertSelfAttention(config, kv_width)
        self.num_inputs = num_inputs
        self.output = BertOutput(config, num_inputs=num_inputs, merge=merge)

    def heads(self) -> list[BertSelfAttention]:
        return [self.self] if self.num_inputs == 1 else [self.self0, self.self1]

    def project_kv(self, states: Sequence[Tensor]) -> list[KV]:
        return [head.project_kv(s) for head, s in zip(self.heads(), states)]

    def forward(self, hidden: Tensor, kvs: Sequence[KV], masks: Sequence[Tensor | None], is_causal: bool = False) -> Tensor:
        contexts = [head(hidden, kv, m, is_causal) for head, kv, m in zip(self.heads(), kvs, masks)]
        return self.output(contexts, hidden)


class BertIntermediate(nn.Module):
    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = _ACTIVATIONS[config.hidden_act]()

    def forward(self, x: Tensor) -> Tensor:
        return self.intermediate_act_fn(self.dense(x))


class BertLayer(nn.Module):
    """Self-attention, cross-attention (multimodal mode, layers that have it), then the feed-forward block.

    With a query branch (``query_ffn``) the first ``num_queries`` rows are the Q-Former's queries: they
    alone cross-attend and take ``intermediate_query``/``output_query``; the text rows take the text FFN.
    """

    def __init__(self, config: MedConfig, layer_num: int) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.has_cross_attention = config.has_cross_attention(layer_num)
        if self.has_cross_attention:
            twin = config.num_cross_images == 2
            self.crossattention = BertAttention(
                config,
                is_cross_attention=True,
                num_inputs=config.num_cross_images,
                merge=twin and layer_num >= config.merge_layer_start,
            )
        if config.text_input:
            self.intermediate = BertIntermediate(config)
            self.output = BertOutput(config, in_width=config.intermediate_size)
        self.query_ffn = config.query_ffn
        if config.query_ffn:
            self.intermediate_query = BertIntermediate(config)
            self.output_query = BertOutput(config, in_width=config.intermediate_size)

    def forward(
        self,
        hidden: Tensor,
        self_mask: Tensor | None,
        is_causal: bool,
        past_self: KV | None = None,
        cross_states: Sequence[Tensor | None] | None = None,
        cross_masks: Sequence[Tensor | None] | None = None,
        past_cross: list[KV] | None = None,
        num_queries: int = 0,
    ) -> tuple[Tensor, KV, list[KV] | None]:
        k, v = self.attention.self.project_kv(hidden)
        if past_self is not None:
            k = torch.cat([past_self[0], k], dim=2)
            v = torch.cat([past_self[1], v], dim=2)
        hidden = self.attention(hidden, [(k, v)], [self_mask], is_causal)
        cross = cross_masks is not None and self.has_cross_attention  # multimodal mode, a cross layer
        if self.query_ffn:
            return self._query_branch(hidden, (k, v), cross, cross_states, cross_masks, past_cross, num_queries)
        cross_kv = None
        if cross:
            cross_kv = past_cross if past_cross is not None else self.crossattention.project_kv(cross_states)
            hidden = self.crossattention(hidden, cross_kv, cross_masks)
        hidden = self.output(self.intermediate(hidden), hidden)
        return hidden, (k, v), cross_kv

    def _query_branch(
        self,
        hidden: Tensor,
        self_kv: KV,
        cross: bool,
        cross_states: Sequence[Tensor | None] | None,
        cross_masks: Sequence[Tensor | None] | None,
        past_cross: list[KV] | None,
        num_queries: int,
    ) -> tuple[Tensor, KV, list[KV] | None]:
        """The Q-Former's split: queries cross-attend and take the query FFN, text takes the text FFN."""
        cross_kv = None
        parts = []
        if num_queries:
            queries = hidden[:, :num_queries]
            if cross:
                cross_kv = past_cross if past_cross is not None else self.crossattention.project_kv(cross_states)
                queries = self.crossattention(queries, cross_kv, cross_masks)
            parts.append(self.output_query(self.intermediate_query(queries), queries))
        if hidden.shape[1] > num_queries:
            text = hidden[:, num_queries:]
            parts.append(self.output(self.intermediate(text), text))
        hidden = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return hidden, self_kv, cross_kv


class BertEncoder(nn.Module):
    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config, i) for i in range(config.num_hidden_layers)])

    def forward(
        self,
        hidden: Tensor,
        self_mask: Tensor | None,
        is_causal: bool,
        cross_states: Sequence[Tensor | None] | None,
        cross_masks: Sequence[Tensor | None] | None,
        past: MedKVCache | None,
        use_cache: bool,
        num_queries: int = 0,
    ) -> tuple[Tensor, MedKVCache | None]:
        self_kv: list[KV] = []
        cross_kv: dict[int, list[KV]] = {}
        past_cross = past.cross_kv if past is not None and past.cross_kv is not None else {}
        for i, layer in enumerate(self.layer):
            hidden, kv, ckv = layer(
                hidden,
                self_mask,
                is_causal,
                past_self=past.self_kv[i] if past is not None else None,
                cross_states=cross_states,
                cross_masks=cross_masks,
                past_cross=past_cross.get(i),
                num_queries=num_queries,
            )
            if use_cache:
                self_kv.append(kv)
                if ckv is not None:
                    cross_kv[i] = ckv
        if not use_cache:
            return hidden, None
        cached_queries = (past.num_queries if past is not None else 0) + num_queries
        return hidden, MedKVCache(self_kv, cross_kv or None, list(cross_masks) if cross_masks is not None else None, cached_queries)


class BertPooler(nn.Module):
    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden: Tensor) -> Tensor:
        return self.activation(self.dense(hidden[:, 0]))


def _init_bert_weights(module: nn.Module, std: float) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()


class BertModel(nn.Module):
    """BERT encoder/decoder trunk with optional cross-attention (``mode``) and KV caching."""

    def __init__(self, config: MedConfig, add_pooling_layer: bool = False) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        if not self.embeddings.LayerNorm.weight.is_meta:  # meta-device build: the checkpoint brings the weights
            self.apply(lambda m: _init_bert_weights(m, config.initializer_range))

    def get_input_embeddings(self) -> nn.Embedding | None:
        """The word embeddings (None for a stage-2 Q-Former, which has no text input)."""
        return getattr(self.embeddings, "word_embeddings", None)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        *,
        encoder_hidden_states: Tensor | Sequence[Tensor] | None = None,
        encoder_attention_mask: Tensor | Sequence[Tensor | None] | None = None,
        mode: str = "multimodal",
        is_decoder: bool = False,
        past_key_values: MedKVCache | None = None,
        use_cache: bool = False,
        inputs_embeds: Tensor | None = None,
        query_embeds: Tensor | None = None,
    ) -> MedOutput:
        """Encode (or decode, ``is_decoder=True``) a batch of token ids, Q-Former queries, or both.

        ``attention_mask`` (B, T) covers the cached plus the new positions (or only the new ones; cached
        positions then count as visible); a 3-D mask (B, L_new, T) of 0/1 gives each new row its visible
        columns and is used as given (``is_decoder`` then adds nothing). ``mode="text"`` skips
        cross-attention; ``"multimodal"`` attends to ``encoder_hidden_states`` (B_img, N, encoder_width),
        whose batch may divide the text batch (rows grouped per image). For ``num_cross_images=2`` both
        image arguments are lists of two. ``query_embeds`` (B, Q, hidden) lead the sequence (``query_ffn``
        configs only); in a query-branch MED only the query rows cross-attend.
        """
        if mode not in ("text", "multimodal"):
            raise ConfigError(f"BertModel mode={mode!r}; use 'text' or 'multimodal'")
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("BertModel: give input_ids or inputs_embeds, not both")
        if input_ids is None and inputs_embeds is None and query_embeds is None:
            raise ValueError("BertModel: give input_ids, inputs_embeds or query_embeds")
        num_queries = 0
        past_length = past_key_values.length if past_key_values is not None else 0
        position_offset = past_length - (past_key_values.num_queries if past_key_values is not None else 0)
        if query_embeds is not None:
            if not self.config.query_ffn:
                raise ConfigError("query_embeds need a Q-Former MED (query_ffn=true); this MedConfig has query_ffn=false")
            if position_offset:
                raise ValueError("query_embeds must lead the sequence, but the cache already holds text positions")
            num_queries = query_embeds.shape[1]
        hidden = self.embeddings(input_ids, position_offset, inputs_embeds, query_embeds)
        batch, length = hidden.shape[:2]
        self_mask, is_causal = _self_attention_mask(attention_mask, batch, length, past_length, is_decoder, hidden)

        cross_states = cross_masks = None
        if mode == "multimodal":
            cross_states, cross_masks = self._cross_inputs(encoder_hidden_states, encoder_attention_mask, past_key_values, hidden)
        hidden, cache = self.encoder(hidden, self_mask, is_causal, cross_states, cross_masks, past_key_values, use_cache, num_queries)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return MedOutput(last_hidden_state=hidden, past_key_values=cache, pooler_output=pooled)

    def _cross_inputs(
        self,
        states: Tensor | Sequence[Tensor] | None,
        masks: Tensor | Sequence[Tensor | None] | None,
        past: MedKVCache | None,
        hidden: Tensor,
    ) -> tuple[list[Tensor | None], list[Tensor | None]]:
        """Normalise the image inputs to per-image lists; masks become additive (None = no padding)."""
        n = self.config.num_cross_images
        if not self.config.add_cross_attention:
            raise ConfigError("mode='multimodal' needs cross-attention, but this MedConfig has add_cross_attention=false; use mode='text'")
        cached = past is not None and past.cross_kv is not None
        if states is None:
            if not cached:
                raise ValueError("mode='multimodal' needs encoder_hidden_states (image embeddings); use mode='text' for text only")
            states = [None] * n
        elif isinstance(states, Tensor):
            states = [states]
        states = list(states)
        if len(states) != n:
            raise ValueError(f"expected {n} encoder_hidden_states tensor(s) (num_cross_images={n}), got {len(states)}")

        if masks is None:
            if cached and past.cross_masks is not None:
                return states, list(past.cross_masks)
            return states, [None] * n
        masks = [masks] if isinstance(masks, Tensor) else list(masks)
        if len(masks) != n:
            raise ValueError(f"expected {n} encoder_attention_mask tensor(s) (num_cross_images={n}), got {len(masks)}")
        neg = _cross_attn_neg(hidden.dtype)
        additive = []
        for s, m in zip(states, masks):
            if m is None or bool(m.all()):
                additive.append(None)
                continue
            if m.dim() != 2 or (s is not None and m.shape != s.shape[:2]):
                raise ValueError(
                    f"encoder_attention_mask of shape {tuple(m.shape)} does not match the image states {tuple(s.shape[:2]) if s is not None else ''}"
                )
            additive.append((1.0 - m.to(hidden.dtype))[:, None, None, :] * neg)
        return states, additive


def _self_attention_mask(mask: Tensor | None, batch: int, length: int, past: int, is_decoder: bool, ref: Tensor) -> tuple[Tensor | None, bool]:
    """Additive self-attention mask ``(1 - m) * -10000`` and whether SDPA's ``is_causal`` can replace it.

    Decoder: causal over the new positions (cached positions all visible) times the padding mask.
    A 3-D mask (B, length, total) is taken as the full per-row visibility.
    """
    total = past + length
    if mask is not None and mask.dim() == 3:
        if mask.shape != (batch, length, total):
            raise ValueError(f"3-D attention_mask of shape {tuple(mask.shape)}; expected (batch, new, cached + new) = {(batch, length, total)}")
        return (1.0 - mask.to(ref.dtype))[:, None] * SELF_ATTN_NEG, False
    if mask is not None:
        if mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] not in (total, length):
            raise ValueError(
                f"attention_mask of shape {tuple(mask.shape)} does not fit a batch of {batch} x {total} positions (cached {past} + new {length})"
            )
        if mask.shape[1] != total:  # only the new positions given: cached ones are visible
            mask = torch.cat([mask.new_ones(batch, past), mask], dim=1)
        if bool(mask.all()):
            mask = None
    if not is_decoder:
        if mask is None:
            return None, False
        return (1.0 - mask.to(ref.dtype))[:, None, None, :] * SELF_ATTN_NEG, False
    if mask is None:
        if length == 1:
            return None, False  # one new query sees every position
        if past == 0:
            return None, True
    keep = torch.ones(length, total, dtype=torch.bool, device=ref.device).tril(diagonal=past)[None]  # (1, L, T)
    if mask is not None:
        keep = keep & mask[:, None, :].bool()
    return (1.0 - keep.to(ref.dtype))[:, None] * SELF_ATTN_NEG, False


# ------------------------------------------------------------------------------------------------
# LM head
# ------------------------------------------------------------------------------------------------
class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = _ACTIVATIONS[config.hidden_act]()
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # both keys appear in checkpoints; one parameter

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.transform(x))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, x: Tensor) -> Tensor:
        return self.predictions(x)


class BertLMHeadModel(nn.Module):
    """The image-grounded text decoder: ``bert`` + ``cls.predictions`` (decoder weight tied to the word embeddings)."""

    def __init__(self, config: MedConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        if not self.cls.predictions.bias.is_meta:
            self.cls.apply(lambda m: _init_bert_weights(m, config.initializer_range))
        self.tie_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    reorder_cache = staticmethod(reorder_cache)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        encoder_hidden_states: Tensor | Sequence[Tensor] | None = None,
        encoder_attention_mask: Tensor | Sequence[Tensor | None] | None = None,
        labels: Tensor | None = None,
        past_key_values: MedKVCache | None = None,
        use_cache: bool = False,
        reduction: str = "mean",
        label_smoothing: float = 0.1,
        return_logits: bool = True,
        logits_last_only: bool = False,
        mode: str = "multimodal",
        is_decoder: bool = True,
        query_embeds: Tensor | None = None,
    ) -> LMOutput:
        """Next-token logits (and the shifted, label-smoothed LM loss when ``labels`` are given).

        ``reduction="none"`` returns each sequence's loss summed over its tokens (BLIP's VQA ranking and
        answer-weighted training use this). ``logits_last_only`` projects only the last position to the
        vocabulary (generation steps); it cannot be combined with ``labels``. With ``query_embeds``
        (Q-Former) the logits and labels cover the text positions only.
        """
        if reduction not in ("mean", "none", "sum"):
            raise ConfigError(f"reduction={reduction!r}; use 'mean', 'none' (per-sequence sum) or 'sum'")
        if labels is not None and logits_last_only:
            raise ValueError("logits_last_only=True cannot compute a loss; drop labels or logits_last_only")
        out = self.bert(
            input_ids,
            attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            mode=mode,
            is_decoder=is_decoder,
            past_key_values=past_key_values,
            use_cache=use_cache,
            query_embeds=query_embeds,
        )
        hidden = out.last_hidden_state
        if query_embeds is not None:
            hidden = hidden[:, query_embeds.shape[1] :]
        if labels is not None and not return_logits:
            return LMOutput(loss=self._loss_at_targets(hidden, labels, reduction, label_smoothing), logits=None, past_key_values=out.past_key_values)
        if logits_last_only:
            hidden = hidden[:, -1:]
        logits = self.cls(hidden)
        loss = None
        if labels is not None:
            shifted = logits[:, :-1].contiguous()
            targets = labels[:, 1:].contiguous()
            loss = F.cross_entropy(
                shifted.view(-1, shifted.shape[-1]),
                targets.view(-1),
                ignore_index=-100,
                reduction=reduction,
                label_smoothing=label_smoothing,
            )
            if reduction == "none":
                loss = loss.view(logits.shape[0], -1).sum(1)
        return LMOutput(loss=loss, logits=logits if return_logits else None, past_key_values=out.past_key_values)

    def _loss_at_targets(self, hidden: Tensor, labels: Tensor, reduction: str, label_smoothing: float) -> Tensor:
        """The shifted LM loss with the vocabulary projection run only where a target exists (not on padding,
        prompts or the last position); the same values as projecting every position."""
        targets = labels[:, 1:]
        keep = targets != -100
        token_loss = F.cross_entropy(self.cls(hidden[:, :-1][keep]), targets[keep], reduction="none", label_smoothing=label_smoothing)
        if reduction == "none":  # per sequence, summed in position order (ignored positions add 0)
            return token_loss.new_zeros(targets.shape).masked_scatter(keep, token_loss).sum(1)
        return token_loss.sum() if reduction == "sum" else token_loss.mean()


__all__ = [
    "MedConfig",
    "MedKVCache",
    "MedOutput",
    "LMOutput",
    "BertModel",
    "BertLMHeadModel",
    "reorder_cache",
    "MED_CONFIG_DIR",
]
