"""MED vs transformers 5.23 BlipTextModel / BlipTextLMHeadModel with shared random weights.

Aligned differences: HF builds ``crossattention`` only when ``config.is_decoder`` (so the reference config
sets ``is_decoder=True`` and the encoder call passes ``is_decoder=False``); HF has no ``mode`` (text mode =
no ``encoder_hidden_states``); HF's label smoothing defaults to 0.0 (set to 0.1 like BLIP); HF's
BlipTextModel has a pooler by default (built with ``add_pooling_layer=False``). HF masks with the dtype
minimum instead of -10000/-1e9; after softmax in fp32 both give exactly zero weight to masked keys.

transformers 5.23 bug: ``BlipTextLayer`` passes the cross-attention mask as ``attention_mask`` while
``BlipTextSelfAttention`` reads ``encoder_attention_mask`` for cross-attention, so HF ignores the image
padding mask. The reference is therefore run row by row on the image tokens with the padding cut off,
which is what the original (masked) computation means.
"""

import pytest
import torch

from lavislite.models.med import BertLMHeadModel, BertModel, MedConfig

H, LAYERS, HEADS, INTER, VOCAB, ENC_W = 32, 2, 4, 48, 99, 24


def _configs():
    from transformers import BlipTextConfig

    hf_cfg = BlipTextConfig(
        vocab_size=VOCAB, hidden_size=H, encoder_hidden_size=ENC_W, intermediate_size=INTER,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=40,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, is_decoder=True, label_smoothing=0.1,
        bos_token_id=1, eos_token_id=2, sep_token_id=2, pad_token_id=0,
    )
    ours = MedConfig(
        vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=INTER, max_position_embeddings=40, encoder_width=ENC_W,
    )
    return hf_cfg, ours


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            offset = 1.0 if name.endswith("LayerNorm.weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + offset)


def _hf_rowwise(fn, ids, mask, image, image_mask):
    """Run ``fn`` one row at a time on the unpadded image tokens (see the module note)."""
    outs = [
        fn(ids[i : i + 1], mask[i : i + 1], image[i : i + 1, : int(image_mask[i].sum())]) for i in range(ids.shape[0])
    ]
    return outs


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    image = torch.randn(3, 5, ENC_W, generator=g)
    image_mask = torch.ones(3, 5, dtype=torch.long)
    image_mask[0, 4:] = 0
    return ids, mask, image, image_mask


@pytest.fixture(scope="module")
def encoders():
    from transformers import BlipTextModel

    hf_cfg, cfg = _configs()
    hf = BlipTextModel(hf_cfg, add_pooling_layer=False).eval()
    _randomise(hf, 1)
    ours = BertModel(cfg).eval()
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=True)
    assert not missing and not unexpected
    return hf, ours


@pytest.mark.parametrize("is_decoder", [False, True])
def test_text_mode_matches(encoders, is_decoder):
    hf, ours = encoders
    ids, mask, _, _ = _inputs()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, is_decoder=is_decoder).last_hidden_state
        got = ours(ids, mask, mode="text", is_decoder=is_decoder).last_hidden_state
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("is_decoder", [False, True])
def test_multimodal_mode_matches(encoders, is_decoder):
    hf, ours = encoders
    ids, mask, image, image_mask = _inputs(1)
    with torch.no_grad():
        ref = torch.cat(_hf_rowwise(
            lambda i, m, img: hf(input_ids=i, attention_mask=m, encoder_hidden_states=img, is_decoder=is_decoder).last_hidden_state,
            ids, mask, image, image_mask,
        ))
        got = ours(
            ids, mask, encoder_hidden_states=image, encoder_attention_mask=image_mask,
            mode="multimodal", is_decoder=is_decoder,
        ).last_hidden_state
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_lm_head_logits_and_loss_match():
    from transformers import BlipTextLMHeadModel

    hf_cfg, cfg = _configs()
    hf = BlipTextLMHeadModel(hf_cfg).eval()
    _randomise(hf, 2)
    hf.cls.predictions.decoder.weight = hf.bert.embeddings.word_embeddings.weight  # keep HF's tie after randomising
    ours = BertLMHeadModel(cfg).eval()
    sd = hf.state_dict()
    assert "cls.predictions.decoder.weight" in sd
    missing, unexpected = ours.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight

    ids, mask, image, image_mask = _inputs(2)
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        rows = [
            hf(
                input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1], labels=labels[i : i + 1], reduction="none",
                encoder_hidden_states=image[i : i + 1, : int(image_mask[i].sum())],
            )
            for i in range(ids.shape[0])
        ]
        ref_logits = torch.cat([r.logits for r in rows])
        ref_sum = torch.cat([r.loss for r in rows])  # per-sequence sums
        ref_mean = ref_sum.sum() / (labels[:, 1:] != -100).sum()  # CE "mean" = over all non-ignored tokens
        for reduction, ref_loss in (("none", ref_sum), ("mean", ref_mean)):
            got = ours(
                ids, mask, encoder_hidden_states=image, encoder_attention_mask=image_mask,
                labels=labels, reduction=reduction, label_smoothing=0.1,
            )
            torch.testing.assert_close(got.logits, ref_logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got.loss, ref_loss, atol=1e-5, rtol=1e-5)
        # unpadded images: the whole batch in one HF call, mean reduction computed by HF itself
        full = hf(input_ids=ids, attention_mask=mask, encoder_hidden_states=image, labels=labels)
        got = ours(ids, mask, encoder_hidden_states=image, labels=labels)
        torch.testing.assert_close(got.logits, full.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.loss, full.loss, atol=1e-5, rtol=1e-5)
