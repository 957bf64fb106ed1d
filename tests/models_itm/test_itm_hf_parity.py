"""BlipITM vs transformers 5.23 ``BlipForImageTextRetrieval`` (tiny, random weights, ``save_pretrained`` +
``load_checkpoint(dir)``), and the retrieval protocol.

Aligned difference: HF feeds the tokenizer's [CLS] to the ITM encoder; BLIP's retrieval and LAVIS use
[ENC]. With ``itm_first_token="cls"`` our ``forward`` reproduces HF (and the original BLIP demo); with the
default ``enc`` it equals HF given [ENC]-first ids.
"""

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.caption import hf_configs, randomise
from tests.helpers.tiny import CAPTIONS, make_tiny


@pytest.fixture(scope="module")
def pair(tiny_tokenizer, tmp_path_factory):
    from transformers import BlipConfig, BlipForImageTextRetrieval

    text, vision = hf_configs(tiny_tokenizer)
    torch.manual_seed(0)
    hf = BlipForImageTextRetrieval(BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=16)).eval()
    randomise(hf, 0)
    path = tmp_path_factory.mktemp("hf_itm")
    hf.save_pretrained(path)
    ours = make_tiny("blip_image_text_matching", tiny_tokenizer, seed=1).eval()
    report = ours.load_checkpoint(str(path))
    assert not report.missing and not report.unexpected and not report.mismatched, str(report)
    return hf, ours, path


def _ids(model, first=None):
    return model.tokenize(CAPTIONS, padding="longest", max_length=35, first_token=first)


def test_itm_logits_and_probabilities(pair, itm_images, tiny_tokenizer):
    hf, ours, path = pair
    samples = {"image": itm_images, "text_input": CAPTIONS}
    with torch.no_grad():
        ids, mask = _ids(ours)
        ref_cls = hf(input_ids=ids, attention_mask=mask, pixel_values=itm_images, use_itm_head=True).itm_score
        enc_ids, _ = _ids(ours, tiny_tokenizer.enc_token_id)
        ref_enc = hf(input_ids=enc_ids, attention_mask=mask, pixel_values=itm_images, use_itm_head=True).itm_score
        got_enc = ours(samples, match_head="itm")
        ours.itm_first_token = "cls"
        try:
            got_cls = ours(samples, match_head="itm")
            prob = ours.match_probability(samples)
        finally:
            ours.itm_first_token = "enc"
    assert got_enc.shape == (4, 2)
    torch.testing.assert_close(got_enc, ref_enc, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_cls, ref_cls, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(prob, ref_cls.softmax(-1)[:, 1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got_enc, got_cls)  # the position-0 token matters


def test_itc_cosine(pair, itm_images):
    hf, ours, _ = pair
    with torch.no_grad():
        ids, mask = _ids(ours)
        ref = hf(input_ids=ids, attention_mask=mask, pixel_values=itm_images, use_itm_head=False).itm_score
        got = ours({"image": itm_images, "text_input": CAPTIONS}, match_head="itc")
        sim = ours.itc_similarity(ours.encode_image(itm_images)[1], ours.encode_text(CAPTIONS)[0])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    assert got.shape == (4, 4)
    # the protocol pads to max_length: same cosines
    torch.testing.assert_close(sim, got, atol=1e-5, rtol=1e-4)


def test_retrieval_protocol(pair, itm_images, tiny_tokenizer):
    _, ours, _ = pair
    with torch.no_grad():
        tokens, image_proj = ours.encode_image(itm_images)
        text_proj, ids, mask = ours.encode_text(CAPTIONS, max_length=20)
        assert tokens.shape == (4, 17, 32) and image_proj.shape == (4, 16)
        assert ids.shape == mask.shape == (4, 20) and text_proj.shape == (4, 16)
        assert bool((ids[:, 0] == tiny_tokenizer.cls_token_id).all())
        sims = F.normalize(image_proj, dim=-1) @ F.normalize(text_proj, dim=-1).t()
        torch.testing.assert_close(sims, ours({"image": itm_images, "text_input": CAPTIONS}, match_head="itc"), atol=1e-5, rtol=1e-4)
        # r = 4 texts per image, grouped: equals pairwise ITM with [ENC] and the image tokens repeated
        r = 4
        flat_ids, flat_mask = ids.repeat(4, 1), mask.repeat(4, 1)
        grouped = ours.itm_logits(tokens, flat_ids, flat_mask)
        enc = flat_ids.clone()
        enc[:, 0] = tiny_tokenizer.enc_token_id
        states = ours.text_encoder(enc, flat_mask, encoder_hidden_states=tokens.repeat_interleave(r, 0)).last_hidden_state
        torch.testing.assert_close(grouped, ours.itm_head(states[:, 0])[:, 1], atol=1e-5, rtol=1e-4)
        # one text per image equals forward(itm) with [ENC] (no extra padding beyond the longest text)
        short_ids, short_mask = _ids(ours)
        torch.testing.assert_close(ours.itm_logits(tokens, short_ids, short_mask),
                                   ours({"image": itm_images, "text_input": CAPTIONS})[:, 1], atol=1e-5, rtol=1e-4)
    from lavislite.common.errors import DataError

    with pytest.raises(DataError, match="texts per image"):
        ours.itm_logits(tokens, ids[:3], mask[:3])


def test_official_round_trip_and_resize(pair, tmp_path, itm_images):
    from lavislite.common.checkpoint import save_checkpoint

    _, src, _ = pair
    path = save_checkpoint(src, tmp_path / "itm.pth")
    dst = make_tiny("blip_image_text_matching", src.tokenizer, seed=3).eval()
    report = dst.load_checkpoint(path)
    assert not report.missing and not report.unexpected and not report.mismatched
    samples = {"image": itm_images, "text_input": CAPTIONS}
    with torch.no_grad():
        torch.testing.assert_close(dst(samples), src(samples))
    big = make_tiny("blip_image_text_matching", src.tokenizer, seed=3, image_size=48).eval()
    report = big.load_checkpoint(path)
    assert not report.missing and not report.mismatched
    assert big({"image": torch.randn(2, 3, 48, 48), "text_input": CAPTIONS[:2]}).shape == (2, 2)


def test_errors(pair, itm_images):
    from lavislite.common.errors import ConfigError, DataError

    _, ours, _ = pair
    with pytest.raises(ConfigError, match="match_head"):
        ours({"image": itm_images, "text_input": CAPTIONS}, match_head="foo")
    with pytest.raises(DataError, match="texts per image"):
        ours({"image": itm_images, "text_input": CAPTIONS[:3]})
    with pytest.raises(ConfigError, match="itm_first_token"):
        make_tiny("blip_image_text_matching", ours.tokenizer, itm_first_token="sep").eval()
