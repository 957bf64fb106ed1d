"""BlipNLVR: twin cross-attention initialised from single cross-attention weights (BLIP's NLVR loader),
forward/predict, overfitting a tiny batch, model types and checkpoint round trips."""

import random

import pytest
import torch

from lavislite.common.checkpoint import save_checkpoint
from lavislite.common.errors import DataError
from lavislite.models.blip.nlvr import BlipNLVR
from lavislite.models.med import BertModel

SENTENCES = ["the left image has two dogs", "there is a red bus in one image", "both images show cats",
             "the right image contains exactly three birds"]


@pytest.fixture(scope="module")
def nlvr_tokenizer(tmp_path_factory):
    from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer

    words = " ".join(SENTENCES).split() + "one two three four image images dog cat bird".split()
    rng = random.Random(1)
    out = tmp_path_factory.mktemp("nlvr_vocab")
    build_wordpiece_vocab([" ".join(rng.choices(words, k=7)) for _ in range(300)] + SENTENCES, 100, out)
    return init_tokenizer(out)


def make_nlvr(tok, seed=0, **overrides):
    from lavislite.common.config import model_type_config

    torch.manual_seed(seed)
    med = {"vocab_size": len(tok), **overrides.pop("med_overrides", {})}
    cfg = model_type_config(BlipNLVR, "tiny", {"med_overrides": med, **overrides})
    return BlipNLVR.from_config(cfg.model, tokenizer=tok)


def _samples(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image0": torch.randn(n, 3, size, size, generator=g),
        "image1": torch.randn(n, 3, size, size, generator=g),
        "text_input": SENTENCES[:n],
        "label": torch.tensor([1, 0, 1, 0][:n]),
    }


def _single_cross_state_dict(model, seed):
    """A pretrain-style state dict: the NLVR model's ViT plus a single-cross-attention text encoder
    (and a text_decoder key the NLVR model does not have)."""
    torch.manual_seed(seed)
    single = BertModel(model.text_encoder.config.replace(num_cross_images=1))
    sd = {k: v for k, v in model.state_dict().items() if k.startswith("visual_encoder.")}
    sd.update({f"text_encoder.{k}": v for k, v in single.state_dict().items()})
    sd["text_decoder.cls.predictions.bias"] = torch.zeros(3)
    return sd, single


def test_twin_init_from_single_cross_attention(nlvr_tokenizer):
    model = make_nlvr(nlvr_tokenizer)
    sd, _ = _single_cross_state_dict(model, seed=11)
    merge_before = model.text_encoder.encoder.layer[1].crossattention.output.merge_layer.weight.clone()
    report = model.load_checkpoint(sd)
    layers = model.text_encoder.config.num_hidden_layers
    for i in range(layers):
        src = f"text_encoder.encoder.layer.{i}.crossattention"
        for twin in ("self0", "self1"):
            for name in ("query", "key", "value"):
                for p in ("weight", "bias"):
                    got = model.state_dict()[f"{src}.{twin}.{name}.{p}"]
                    assert torch.equal(got, sd[f"{src}.self.{name}.{p}"])
        for twin in ("dense0", "dense1"):
            for p in ("weight", "bias"):
                assert torch.equal(model.state_dict()[f"{src}.output.{twin}.{p}"], sd[f"{src}.output.dense.{p}"])
    # merge_layer (layers >= merge_layer_start=1 in the tiny type) and cls_head stay as initialised
    assert torch.equal(model.text_encoder.encoder.layer[1].crossattention.output.merge_layer.weight, merge_before)
    missing = sorted({k.split(".")[0] if k.startswith("cls_head") else k.split("output.")[-1] for k in report.missing})
    assert missing == ["cls_head", "merge_layer.bias", "merge_layer.weight"], report.missing
    assert report.unexpected == ["text_decoder.cls.predictions.bias"]


def test_twin_with_equal_images_equals_single_cross_attention(nlvr_tokenizer):
    """Without merge layers, twin = average of two identical branches = the single cross-attention encoder."""
    model = make_nlvr(nlvr_tokenizer, med_overrides={"merge_layer_start": 99}).eval()
    sd, single = _single_cross_state_dict(model, seed=12)
    model.load_checkpoint(sd)
    single.eval()
    s = _samples()
    ids, mask = model.tokenize(s["text_input"], first_token=nlvr_tokenizer.enc_token_id)
    with torch.no_grad():
        img = model.visual_encoder(s["image0"])
        twin = model.text_encoder(ids, mask, encoder_hidden_states=[img, img]).last_hidden_state
        ref = single(ids, mask, encoder_hidden_states=img).last_hidden_state
    torch.testing.assert_close(twin, ref, atol=1e-5, rtol=1e-5)


def test_forward_matches_separate_vit_passes(nlvr_tokenizer):
    model = make_nlvr(nlvr_tokenizer).eval()
    s = _samples()
    with torch.no_grad():
        logits = model(s).extras["logits"]
        e0, e1 = model.visual_encoder(s["image0"]), model.visual_encoder(s["image1"])
        ids, mask = model.tokenize(s["text_input"], first_token=nlvr_tokenizer.enc_token_id)
        assert int(ids[0, 0]) == nlvr_tokenizer.enc_token_id
        h = model.text_encoder(ids, mask, encoder_hidden_states=[e0, e1]).last_hidden_state[:, 0]
        torch.testing.assert_close(logits, model.cls_head(h), atol=1e-5, rtol=1e-5)
    out = model.predict(s)
    assert out["predictions"].shape == (4,) and out["predictions"].dtype == torch.long
    assert torch.equal(out["predictions"], logits.argmax(1))
    assert torch.equal(out["targets"], s["label"])
    assert model.predict({k: v for k, v in s.items() if k != "label"})["targets"] is None


def test_overfits_tiny_batch(nlvr_tokenizer):
    model = make_nlvr(nlvr_tokenizer, seed=3).train()
    s = _samples()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model(s).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0], losses
    assert torch.equal(model.eval().predict(s)["predictions"], s["label"])


def test_input_errors(nlvr_tokenizer):
    model = make_nlvr(nlvr_tokenizer).eval()
    s = _samples()
    with pytest.raises(DataError, match="label"):
        model({k: v for k, v in s.items() if k != "label"})
    with pytest.raises(DataError, match="image1"):
        model.predict({k: v for k, v in s.items() if k != "image1"})
    with pytest.raises(DataError, match="one sentence per image pair"):
        model.predict({**s, "text_input": SENTENCES[:2]})


def test_native_checkpoint_round_trip(nlvr_tokenizer, tmp_path):
    src = make_nlvr(nlvr_tokenizer, seed=4).eval()
    path = save_checkpoint(src, tmp_path / "nlvr.pth")
    dst = make_nlvr(nlvr_tokenizer, seed=5).eval()
    report = dst.load_checkpoint(path)
    assert report.clean, str(report)
    s = _samples()
    with torch.no_grad():
        torch.testing.assert_close(dst(s).extras["logits"], src(s).extras["logits"])
    big = make_nlvr(nlvr_tokenizer, seed=6, image_size=48).eval()
    report = big.load_checkpoint(path)
    assert not report.missing and not report.unexpected and not report.mismatched
    assert [k for k, _, _ in report.interpolated] == ["visual_encoder.pos_embed"]
    assert big.predict(_samples(size=48))["predictions"].shape == (4,)


def test_tiny_type_from_pretrained(nlvr_tokenizer):
    model = BlipNLVR.from_pretrained("tiny", tokenizer=str(nlvr_tokenizer.vocab_file), med_overrides={"vocab_size": len(nlvr_tokenizer)})
    assert model.text_encoder.config.num_cross_images == 2
    assert BlipNLVR.model_types() == ["nlvr", "tiny"]


@pytest.mark.slow
def test_full_type_builds():
    model = BlipNLVR.from_pretrained("nlvr", load_finetuned=False, load_pretrained=False)
    sd = model.state_dict()
    assert len(sd) == 579 - 1  # the original NLVR state dict's key count, minus the non-persistent position_ids buffer
    assert "text_encoder.encoder.layer.6.crossattention.output.merge_layer.weight" in sd
    assert "text_encoder.encoder.layer.5.crossattention.output.merge_layer.weight" not in sd
    assert sd["visual_encoder.pos_embed"].shape == (1, 577, 768)
    n = model.num_parameters()
    assert 250e6 < n < 265e6, n
