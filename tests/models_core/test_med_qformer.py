"""MED in its Q-Former configuration (cross-attention every second layer, query-only FFN branch) against
transformers' ``Blip2QFormerModel`` with the same random weights, and its cache keyed by cross layers.

transformers' Q-Former owns no text embeddings (``Blip2ForImageTextRetrieval`` holds them as
``Blip2TextEmbeddings``); the reference for query+text passes therefore builds its input with that class
from the same word/position weights. transformers masks with the dtype minimum instead of -10000; in fp32
both give masked keys exactly zero weight.
"""

import pytest
import torch

from lavislite.common.errors import ConfigError
from lavislite.models.med import BertLMHeadModel, BertModel, MedConfig

H, LAYERS, HEADS, INTER, VOCAB, ENC_W, Q = 32, 4, 4, 37, 99, 24, 6


def _hf_config(text_input: bool = True):
    from transformers import Blip2QFormerConfig

    return Blip2QFormerConfig(
        vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=INTER,
        max_position_embeddings=64, cross_attention_frequency=2, encoder_hidden_size=ENC_W,
        use_qformer_text_input=text_input, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


def _med_config(text_input: bool = True) -> MedConfig:
    return MedConfig(
        vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=INTER,
        max_position_embeddings=64, encoder_width=ENC_W, cross_attention_freq=2, query_ffn=True, text_input=text_input,
    )


def _to_med_key(hf_key: str) -> str:
    """transformers Blip2QFormerModel / Blip2TextEmbeddings name -> MED name (= LAVIS ``Qformer.bert.*``)."""
    key = hf_key.replace(".attention.attention.", ".attention.self.").replace(".crossattention.attention.", ".crossattention.self.")
    return "embeddings.LayerNorm." + key[len("layernorm."):] if key.startswith("layernorm.") else key


def _pair(text_input: bool = True, seed: int = 0):
    """A transformers Q-Former (+ its text embeddings) with random weights and a MED holding the same weights."""
    from transformers.models.blip_2.modeling_blip_2 import (
        Blip2QFormerModel,
        Blip2TextEmbeddings,
    )

    torch.manual_seed(seed)
    hf = Blip2QFormerModel(_hf_config(text_input)).eval()
    emb = Blip2TextEmbeddings(_hf_config(text_input)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # all weights random (LayerNorms too), so a mis-mapped key cannot hide
        for p in [*hf.parameters(), *emb.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    state = {_to_med_key(k): v for k, v in hf.state_dict().items()}
    if text_input:
        state.update({f"embeddings.{k}": v for k, v in emb.state_dict().items() if k != "position_ids"})
    med = BertModel(_med_config(text_input)).eval()
    missing, unexpected = med.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return hf, emb, med


def _inputs(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(2, Q, H, generator=g)
    image = torch.randn(2, 7, ENC_W, generator=g)
    ids = torch.randint(1, VOCAB, (2, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return queries, image, ids, mask


def test_layout_cross_attention_every_second_layer_and_query_branch():
    med = BertModel(_med_config())
    keys = set(med.state_dict())
    assert [i for i in range(LAYERS) if f"encoder.layer.{i}.crossattention.self.key.weight" in keys] == [0, 2]
    assert med.state_dict()["encoder.layer.0.crossattention.self.key.weight"].shape == (H, ENC_W)
    for i in range(LAYERS):
        for name in ("intermediate.dense", "output.dense", "intermediate_query.dense", "output_query.dense", "output_query.LayerNorm"):
            assert f"encoder.layer.{i}.{name}.weight" in keys
    stage2 = set(BertModel(_med_config(text_input=False)).state_dict())
    assert not any(k.split(".")[3:4] in (["intermediate"], ["output"]) or "word_embeddings" in k for k in stage2)
    assert "encoder.layer.0.attention.output.dense.weight" in stage2 and "encoder.layer.0.output_query.dense.weight" in stage2
    assert "embeddings.LayerNorm.weight" in stage2
    # BLIP's default keeps cross-attention in every layer and no query branch
    blip = set(BertModel(MedConfig(**{**_med_config().__dict__, "cross_attention_freq": 1, "query_ffn": False})).state_dict())
    assert all(f"encoder.layer.{i}.crossattention.self.key.weight" in blip for i in range(LAYERS))
    assert not any("_query" in k for k in blip)


def test_stage2_keys_equal_transformers_one_to_one():
    from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel

    hf_keys = {_to_med_key(k) for k in Blip2QFormerModel(_hf_config(text_input=False)).state_dict()}
    assert hf_keys == set(BertModel(_med_config(text_input=False)).state_dict())


@pytest.mark.parametrize("text_input", [True, False])
def test_query_pass_equals_transformers(text_input):
    """Queries alone with the image: ``Blip2Model.get_qformer_features``'s Q-Former call."""
    hf, _, med = _pair(text_input)
    queries, image, _, _ = _inputs()
    with torch.no_grad():
        ref = hf(query_embeds=queries, encoder_hidden_states=image).last_hidden_state
        ours = med(query_embeds=queries, encoder_hidden_states=image).last_hidden_state
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)


def test_queries_and_text_bidirectional_equals_transformers():
    """The ITM pass: queries and padded text share self-attention; only the queries cross-attend."""
    hf, emb, med = _pair()
    queries, image, ids, mask = _inputs()
    full_mask = torch.cat([torch.ones(2, Q, dtype=torch.long), mask], dim=1)
    with torch.no_grad():
        ref = hf(query_embeds=emb(ids, query_embeds=queries), query_length=Q, attention_mask=full_mask,
                 encoder_hidden_states=image).last_hidden_state
        ours = med(ids, full_mask, query_embeds=queries, encoder_hidden_states=image).last_hidden_state
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)


def test_text_only_equals_transformers():
    """The ITC text pass: no queries, no cross-attention, the text FFN."""
    hf, emb, med = _pair()
    _, _, ids, mask = _inputs()
    with torch.no_grad():
        ref = hf(query_embeds=emb(ids), query_length=0, attention_mask=mask).last_hidden_state
        ours = med(ids, mask, mode="text").last_hidden_state
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)


def test_cache_holds_only_cross_layers_and_cached_queries_equal_joint_pass():
    """The ITG path: text decoded on the query pass's cache equals one joint pass whose mask lets queries
    see queries and text see the queries and earlier text; cross K/V are cached for layers 0 and 2 only."""
    _, _, med = _pair()
    queries, image, ids, mask = _inputs()
    with torch.no_grad():
        query_pass = med(query_embeds=queries, encoder_hidden_states=image, use_cache=True)
        cache = query_pass.past_key_values
        assert sorted(cache.cross_kv) == [0, 2] and cache.num_queries == Q and cache.length == Q
        text_mask = torch.cat([torch.ones(2, Q, dtype=torch.long), mask], dim=1)
        cached = med(ids, text_mask, mode="text", is_decoder=True, past_key_values=cache, use_cache=True)
        assert cached.past_key_values.length == Q + ids.shape[1] and cached.past_key_values.num_queries == Q

        length = Q + ids.shape[1]
        visible = torch.zeros(2, length, length)
        visible[:, :, :Q] = 1
        visible[:, Q:, Q:] = torch.ones(ids.shape[1], ids.shape[1]).tril()
        visible = visible * text_mask[:, None, :]
        joint = med(ids, visible, query_embeds=queries, encoder_hidden_states=image).last_hidden_state
    torch.testing.assert_close(joint[:, :Q], query_pass.last_hidden_state, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(joint[:, Q:], cached.last_hidden_state, atol=1e-6, rtol=1e-6)


def test_incremental_decoding_on_cached_queries():
    """Text positions continue from 0 after the cached queries, step by step as in one call."""
    torch.manual_seed(0)
    dec = BertLMHeadModel(_med_config()).eval()
    queries, image, ids, _ = _inputs()
    with torch.no_grad():
        cache = dec.bert(query_embeds=queries, encoder_hidden_states=image, use_cache=True).past_key_values
        full = dec(ids, past_key_values=cache, mode="text").logits
        steps, past = [], cache
        for t in range(ids.shape[1]):
            out = dec(ids[:, t : t + 1], past_key_values=past, mode="text", use_cache=True)
            steps.append(out.logits)
            past = out.past_key_values
        with_queries = dec(ids, query_embeds=queries, encoder_hidden_states=image,
                           attention_mask=_unilm(ids.shape[1])).logits
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_queries, full, atol=1e-5, rtol=1e-5)


def _unilm(text_length: int) -> torch.Tensor:
    length = Q + text_length
    visible = torch.zeros(2, length, length)
    visible[:, :, :Q] = 1
    visible[:, Q:, Q:] = torch.ones(text_length, text_length).tril()
    return visible


def test_query_errors():
    med = BertModel(_med_config())
    queries, image, ids, _ = _inputs()
    with pytest.raises(ConfigError, match="query_ffn"):
        BertModel(MedConfig(hidden_size=H, num_attention_heads=HEADS, num_hidden_layers=1))(ids, query_embeds=queries, mode="text")
    with pytest.raises(ValueError, match="text_input=false"):
        BertModel(_med_config(text_input=False))(ids, mode="text")
    with pytest.raises(ValueError, match="3-D attention_mask"):
        med(ids, torch.ones(2, 5, 4), mode="text")
    with torch.no_grad():
        cache = med(ids, mode="text", use_cache=True).past_key_values
    with pytest.raises(ValueError, match="lead the sequence"):
        med(query_embeds=queries, encoder_hidden_states=image, past_key_values=cache)
    for bad in ({"cross_attention_freq": 0}, {"text_input": False, "query_ffn": False}, {"query_ffn": True, "num_cross_images": 2}):
        with pytest.raises(ConfigError):
            MedConfig(**bad)
    assert MedConfig.from_dict({"cross_attention_frequency": 2, "use_qformer_text_input": False, "query_ffn": True}) == MedConfig(
        cross_attention_freq=2, text_input=False, query_ffn=True
    )
