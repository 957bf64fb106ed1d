"""BlipFeatureExtractor: shapes, normalisation, the [ENC] multimodal mode and checkpoint loading."""

import pytest
import torch

from tests.helpers.tiny import CAPTIONS, make_tiny


@pytest.fixture(scope="module")
def fx(tiny_tokenizer):
    return make_tiny("blip_feature_extractor", tiny_tokenizer, seed=0).eval()


def test_modes(fx, itm_images, tiny_tokenizer):
    samples = {"image": itm_images, "text_input": CAPTIONS}
    img = fx.extract_features(samples, mode="image")
    assert img.image_embeds.shape == (4, 17, 32) and img.image_embeds_proj.shape == (4, 17, 16)
    torch.testing.assert_close(img.image_embeds_proj.norm(dim=-1), torch.ones(4, 17))
    assert img.text_embeds is None and img.multimodal_embeds is None

    txt = fx.extract_features(samples, mode="text")
    ids, mask = fx.tokenize(CAPTIONS, padding="longest", max_length=64)
    assert txt.text_embeds.shape == (4, ids.shape[1], 32) and txt.text_embeds_proj.shape == (4, ids.shape[1], 16)
    ref = fx.text_encoder(ids, mask, mode="text").last_hidden_state  # [CLS] first
    torch.testing.assert_close(txt.text_embeds, ref)
    torch.testing.assert_close(txt.text_embeds_proj.norm(dim=-1), torch.ones(4, ids.shape[1]))

    mm = fx.extract_features(samples, mode="multimodal")
    enc = ids.clone()
    enc[:, 0] = tiny_tokenizer.enc_token_id
    ref = fx.text_encoder(enc, mask, encoder_hidden_states=img.image_embeds).last_hidden_state
    torch.testing.assert_close(mm.multimodal_embeds, ref)
    torch.testing.assert_close(mm.image_embeds, img.image_embeds)
    cls = fx.text_encoder(ids, mask, encoder_hidden_states=img.image_embeds).last_hidden_state
    assert not torch.allclose(mm.multimodal_embeds[:, 0], cls[:, 0])


def test_loads_itm_checkpoint_and_errors(fx, tiny_tokenizer, tmp_path, itm_images):
    from lavislite.common.checkpoint import save_checkpoint
    from lavislite.common.errors import ConfigError, DataError

    itm = make_tiny("blip_image_text_matching", tiny_tokenizer, seed=5).eval()
    path = save_checkpoint(itm, tmp_path / "itm.pth")
    other = make_tiny("blip_feature_extractor", tiny_tokenizer, seed=6).eval()
    report = other.load_checkpoint(path)
    assert list(report.missing) == ["temp"]  # ITM files carry no temperature
    feats = other.extract_features({"image": itm_images}, mode="image")
    torch.testing.assert_close(feats.image_embeds_proj[:, 0], torch.nn.functional.normalize(itm.encode_image(itm_images)[1], dim=-1))
    with pytest.raises(ConfigError, match="mode"):
        fx.extract_features({"image": itm_images}, mode="both")
    with pytest.raises(DataError, match="text_input"):
        fx.extract_features({"image": itm_images}, mode="text")
    with pytest.raises(DataError, match="image"):
        fx.extract_features({"text_input": CAPTIONS}, mode="multimodal")
