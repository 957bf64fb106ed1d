"""MED behaviour: keys, config parsing, masks, KV cache, grouped cross-attention, reorder_cache, twin (NLVR2)."""

import json

import pytest
import torch

from lavislite.common.errors import ConfigError
from lavislite.models.med import (
    BertLMHeadModel,
    BertModel,
    MedConfig,
    MedKVCache,
    reorder_cache,
)

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=32, encoder_width=24)


def _decoder(seed=0, **kw) -> BertLMHeadModel:
    torch.manual_seed(seed)
    return BertLMHeadModel(MedConfig(**{**TINY, **kw})).eval()


def _images(b, n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 24, generator=g)


def _ids(b, length, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 50, (b, length), generator=g)


# -- config --------------------------------------------------------------------------------------
def test_presets_and_json(tmp_path):
    assert MedConfig.preset("med_base").vocab_size == 30524
    assert MedConfig.preset("med_large").encoder_width == 1024
    assert MedConfig.preset("bert_base").vocab_size == 30522
    assert MedConfig.preset("med_base", encoder_width=1024).encoder_width == 1024
    original = {  # BLIP's configs/med_config.json
        "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
        "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524,
        "encoder_width": 768, "add_cross_attention": True,
    }
    path = tmp_path / "med_config.json"
    path.write_text(json.dumps(original))
    assert MedConfig.from_json(path) == MedConfig()
    path.write_text(json.dumps({**original, "cross_attention_every": 2}))
    with pytest.raises(ConfigError, match="cross_attention_every"):
        MedConfig.from_json(path)
    path.write_text(json.dumps({**original, "add_type_embeddings": True}))
    with pytest.raises(ConfigError, match="add_type_embeddings"):
        MedConfig.from_json(path)
    with pytest.raises(ConfigError, match="nope"):
        MedConfig.preset("nope")
    with pytest.raises(ConfigError, match="divisible"):
        MedConfig(hidden_size=30, num_attention_heads=4)


def test_keys_tied_and_position_ids_not_persistent():
    dec = _decoder()
    sd = dec.state_dict()
    assert not any(k.endswith("position_ids") for k in sd)
    assert "cls.predictions.decoder.weight" in sd and "cls.predictions.bias" in sd and "cls.predictions.decoder.bias" in sd
    assert dec.cls.predictions.decoder.weight is dec.bert.embeddings.word_embeddings.weight
    assert dec.cls.predictions.decoder.bias is dec.cls.predictions.bias
    assert sd["bert.encoder.layer.0.crossattention.self.key.weight"].shape == (32, 24)
    # an official-style dict with position_ids loads once the loader drops that buffer
    dec2 = _decoder(seed=5)
    dec2.load_state_dict(sd, strict=True)
    assert torch.equal(dec2.cls.predictions.decoder.weight, dec.bert.embeddings.word_embeddings.weight)
    assert "crossattention" not in " ".join(BertModel(MedConfig(**TINY, add_cross_attention=False)).state_dict())


# -- masks ---------------------------------------------------------------------------------------
def test_padding_masks_equal_truncation():
    model = BertModel(MedConfig(**TINY)).eval()
    ids, img = _ids(1, 6), _images(1, 5)
    with torch.no_grad():
        for is_decoder in (False, True):
            mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
            a = model(ids, mask, encoder_hidden_states=img, encoder_attention_mask=torch.tensor([[1, 1, 1, 0, 0]]), is_decoder=is_decoder)
            b = model(ids[:, :4], encoder_hidden_states=img[:, :3], is_decoder=is_decoder)
            torch.testing.assert_close(a.last_hidden_state[:, :4], b.last_hidden_state)


def test_text_mode_ignores_images_and_decoder_is_causal():
    model = BertModel(MedConfig(**TINY)).eval()
    ids = _ids(2, 6)
    with torch.no_grad():
        t = model(ids, mode="text").last_hidden_state
        t2 = model(ids, mode="text", encoder_hidden_states=_images(2)).last_hidden_state
        torch.testing.assert_close(t, t2)
        full = model(ids, mode="text", is_decoder=True).last_hidden_state
        prefix = model(ids[:, :3], mode="text", is_decoder=True).last_hidden_state
        torch.testing.assert_close(full[:, :3], prefix)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(ids)
    with pytest.raises(ConfigError, match="mode"):
        model(ids, mode="fusion")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_masks_are_finite(dtype):
    model = BertModel(MedConfig(**TINY)).eval().to(dtype)
    ids, img = _ids(2, 5), _images(2).to(dtype)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    img_mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])  # a fully masked image row stays finite (uniform)
    with torch.no_grad():
        out = model(ids, mask, encoder_hidden_states=img, encoder_attention_mask=img_mask, is_decoder=True).last_hidden_state
    assert torch.isfinite(out.float()).all()


# -- generation support --------------------------------------------------------------------------
def test_kv_cache_incremental_equals_full():
    dec = _decoder()
    ids, img = _ids(2, 7), _images(2)
    img_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        full = dec(ids, encoder_hidden_states=img, encoder_attention_mask=img_mask).logits
        out = dec(ids[:, :3], encoder_hidden_states=img, encoder_attention_mask=img_mask, use_cache=True)
        steps = [out.logits]
        past = out.past_key_values
        assert past.length == 3 and past.cross_kv is not None and past.cross_masks[0] is not None
        for t in (3, 4):  # single-token steps, image states not passed again (cached K/V and mask reused)
            out = dec(ids[:, t : t + 1], past_key_values=past, use_cache=True, logits_last_only=True)
            steps.append(out.logits)
            past = out.past_key_values
        # a two-token chunk on top of the cache (explicit causal mask with a prefix)
        out = dec(ids[:, 5:7], torch.ones(2, 7, dtype=torch.long), encoder_hidden_states=img,
                  encoder_attention_mask=img_mask, past_key_values=past, use_cache=True)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert out.past_key_values.length == 7


def test_cross_kv_computed_once_per_image():
    dec = _decoder()
    calls = []
    handle = dec.bert.encoder.layer[0].crossattention.self.key.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    img = _images(2)
    with torch.no_grad():
        out = dec(_ids(6, 2), encoder_hidden_states=img, use_cache=True)  # 3 rows per image
        for _ in range(3):
            out = dec(_ids(6, 1), encoder_hidden_states=img, past_key_values=out.past_key_values, use_cache=True)
    handle.remove()
    assert calls == [2]  # projected once, on 2 image rows (not 6 text rows)


def test_grouped_cross_attention_equals_repeat_interleave():
    dec = _decoder()
    r = 3
    img = _images(2)
    img_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    ids = _ids(2 * r, 6)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        grouped = dec(ids, mask, encoder_hidden_states=img, encoder_attention_mask=img_mask, labels=labels, reduction="none")
        explicit = dec(ids, mask, encoder_hidden_states=img.repeat_interleave(r, 0),
                       encoder_attention_mask=img_mask.repeat_interleave(r, 0), labels=labels, reduction="none")
    torch.testing.assert_close(grouped.logits, explicit.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped.loss, explicit.loss, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        dec(_ids(5, 3), encoder_hidden_states=img)


def test_reorder_cache_expansion_and_beam_reorder():
    dec = _decoder()
    r = 2
    img = _images(2)
    ids = _ids(2, 3)
    cont = _ids(4, 2, seed=7)
    with torch.no_grad():
        out = dec(ids, encoder_hidden_states=img, use_cache=True)  # 2 text rows, one per image
        past = reorder_cache(out.past_key_values, torch.arange(2).repeat_interleave(r))  # -> 4 rows (2 beams/image)
        assert isinstance(past, MedKVCache) and past.batch_size == 4
        assert past.cross_kv[0][0][0].shape[0] == 2  # image K/V untouched
        out = dec(cont[:, :1], encoder_hidden_states=img, past_key_values=past, use_cache=True)
        beam_index = torch.tensor([1, 1, 2, 3])  # each index stays within its image's group
        past = dec.reorder_cache(out.past_key_values, beam_index)
        last = dec(cont[:, 1:2], encoder_hidden_states=img, past_key_values=past).logits

        expanded = ids.repeat_interleave(r, 0)
        history = torch.cat([expanded, cont[:, :1]], dim=1)[beam_index]
        reference = dec(torch.cat([history, cont[:, 1:2]], dim=1), encoder_hidden_states=img).logits[:, -1:]
    torch.testing.assert_close(last, reference, atol=1e-5, rtol=1e-5)


def test_logits_last_only_and_loss_reductions():
    dec = _decoder()
    ids, img = _ids(3, 5), _images(3)
    labels = ids.clone()
    labels[0, 3:] = -100
    with torch.no_grad():
        full = dec(ids, encoder_hidden_states=img)
        last = dec(ids, encoder_hidden_states=img, logits_last_only=True)
        torch.testing.assert_close(last.logits, full.logits[:, -1:])
        per_seq = dec(ids, encoder_hidden_states=img, labels=labels, reduction="none", return_logits=False)
        assert per_seq.logits is None and per_seq.loss.shape == (3,)
        manual = torch.nn.functional.cross_entropy(
            full.logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1), label_smoothing=0.1, reduction="none"
        ).view(3, -1).sum(1)
        torch.testing.assert_close(per_seq.loss, manual)
        mean = dec(ids, encoder_hidden_states=img, labels=labels).loss
        torch.testing.assert_close(mean, manual.sum() / (labels[:, 1:] != -100).sum())
    with pytest.raises(ValueError):
        dec(ids, encoder_hidden_states=img, labels=labels, logits_last_only=True)


# -- NLVR2 twin cross-attention ------------------------------------------------------------------
def test_twin_keys_and_shapes():
    model = BertModel(MedConfig(**TINY, num_cross_images=2, merge_layer_start=1)).eval()
    keys = set(model.state_dict())
    for i in range(2):
        p = f"encoder.layer.{i}.crossattention."
        for name in ("self0.query", "self0.key", "self1.value", "output.dense0", "output.dense1", "output.LayerNorm"):
            assert f"{p}{name}.weight" in keys
        assert f"{p}self.query.weight" not in keys
    assert "encoder.layer.0.crossattention.output.merge_layer.weight" not in keys
    assert model.state_dict()["encoder.layer.1.crossattention.output.merge_layer.weight"].shape == (32, 64)
    ids = _ids(2, 6)
    with torch.no_grad():
        out = model(ids, encoder_hidden_states=[_images(2), _images(2, seed=3)],
                    encoder_attention_mask=[torch.ones(2, 5), torch.ones(2, 5)])
    assert out.last_hidden_state.shape == (2, 6, 32)
    with pytest.raises(ValueError, match="2 encoder_hidden_states"):
        model(ids, encoder_hidden_states=_images(2))


def test_twin_with_identical_weights_and_images_equals_single():
    single = BertModel(MedConfig(**TINY)).eval()
    twin = BertModel(MedConfig(**TINY, num_cross_images=2, merge_layer_start=2)).eval()  # all layers average
    sd = {}
    for k, v in single.state_dict().items():
        if ".crossattention.self." in k:
            sd[k.replace(".self.", ".self0.")] = v
            sd[k.replace(".self.", ".self1.")] = v
        elif ".crossattention.output.dense." in k:
            sd[k.replace(".dense.", ".dense0.")] = v
            sd[k.replace(".dense.", ".dense1.")] = v
        else:
            sd[k] = v
    twin.load_state_dict(sd, strict=True)
    ids, img = _ids(2, 6), _images(2)
    img_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        a = single(ids, encoder_hidden_states=img, encoder_attention_mask=img_mask).last_hidden_state
        b = twin(ids, encoder_hidden_states=[img, img], encoder_attention_mask=[img_mask, img_mask]).last_hidden_state
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training():
    dec = _decoder()
    ids, img = _ids(2, 5), _images(2)
    with torch.no_grad():
        a, b = dec(ids, encoder_hidden_states=img).logits, dec(ids, encoder_hidden_states=img).logits
        torch.testing.assert_close(a, b)
        dec.train()
        c, d = dec(ids, encoder_hidden_states=img).logits, dec(ids, encoder_hidden_states=img).logits
    assert not torch.allclose(c, d)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_loss_only_at_target_positions_matches_full_logits(reduction):
    """return_logits=False projects only the positions that have a target; same loss and gradients."""
    dec = _decoder()  # eval: no dropout, gradients still flow
    ids = _ids(3, 7)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :2] = -100  # a prompt
    losses, grads = [], []
    for return_logits in (True, False):
        dec.zero_grad()
        out = dec(ids, mask, encoder_hidden_states=_images(3), labels=labels, reduction=reduction, return_logits=return_logits)
        out.loss.sum().backward()
        losses.append(out.loss.detach())
        grads.append(dec.cls.predictions.transform.dense.weight.grad.clone())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_half_precision_cpu_attention_matches_sdpa():
    """bf16 on CPU uses two matmuls with fp32 scores instead of SDPA's flash kernel: same result within bf16 rounding."""
    import torch.nn.functional as F

    from lavislite.models.med import _half_attention_cpu

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, n, 16, generator=g) for n in (2, 9, 9))
    mask = torch.zeros(3, 1, 1, 9)
    mask[1, ..., 6:] = -1e4  # padded keys
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = _half_attention_cpu(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=3e-2, rtol=3e-2)


def test_half_precision_cpu_attention_dropout_is_unbiased():
    """Training in bf16 on CPU keeps the matmul path with dropout on the fp32 probabilities: masks differ per
    call, and their average is the dropout-free attention (inverted dropout scales the kept weights)."""
    from lavislite.models.med import _half_attention_cpu

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, n, 8, generator=g).bfloat16() for n in (3, 5, 5))
    plain = _half_attention_cpu(q, k, v, None).float()
    torch.manual_seed(0)
    samples = torch.stack([_half_attention_cpu(q, k, v, None, dropout_p=0.3).float() for _ in range(2000)])
    assert not torch.equal(samples[0], samples[1])
    torch.testing.assert_close(samples.mean(0), plain, atol=0.08, rtol=0.0)
