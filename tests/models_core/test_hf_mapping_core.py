"""transformers BLIP state dicts -> official BLIP key names (checked on tiny real transformers models)."""

import pytest
import torch

from lavislite.models.blip.convert import convert_hf_state_dict, is_hf_state_dict
from lavislite.models.med import BertLMHeadModel, BertModel, MedConfig
from lavislite.models.vit import create_vit

VISION = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=8, layer_norm_eps=1e-6)
TEXT = dict(vocab_size=60, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            encoder_hidden_size=32, max_position_embeddings=40, bos_token_id=1, eos_token_id=2, sep_token_id=2)
MED = MedConfig(vocab_size=60, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=40, encoder_width=32)


def _hf(cls_name):
    import transformers

    cfg = transformers.BlipConfig(vision_config=VISION, text_config=TEXT)
    return getattr(transformers, cls_name)(cfg)


def _ours(with_encoder: bool, with_decoder: bool, with_heads: bool = False) -> torch.nn.Module:
    m = torch.nn.Module()
    m.visual_encoder, _ = create_vit("base", 32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
    if with_encoder:
        m.text_encoder = BertModel(MED)
    if with_decoder:
        m.text_decoder = BertLMHeadModel(MED)
    if with_heads:
        m.vision_proj = torch.nn.Linear(32, 256)
        m.text_proj = torch.nn.Linear(32, 256)
        m.itm_head = torch.nn.Linear(32, 2)
    return m


@pytest.mark.parametrize(
    "cls_name, enc, dec, heads",
    [
        ("BlipForConditionalGeneration", False, True, False),
        ("BlipForQuestionAnswering", True, True, False),
        ("BlipForImageTextRetrieval", True, False, True),
    ],
)
def test_full_models_load_strictly(cls_name, enc, dec, heads):
    sd = _hf(cls_name).state_dict()
    assert is_hf_state_dict(sd)
    converted = convert_hf_state_dict(sd)
    assert not is_hf_state_dict(converted)
    target = _ours(enc, dec, heads)
    if cls_name == "BlipForImageTextRetrieval":  # projection width follows the HF config (image_text_hidden_size)
        target.vision_proj = torch.nn.Linear(32, sd["vision_proj.weight"].shape[0])
        target.text_proj = torch.nn.Linear(32, sd["text_proj.weight"].shape[0])
    missing, unexpected = target.load_state_dict(converted, strict=True)
    assert not missing and not unexpected
    torch.testing.assert_close(converted["visual_encoder.pos_embed"], sd["vision_model.embeddings.position_embedding"].reshape(1, 17, 32))


def test_blip_model_and_bare_vision_and_tie_fill():
    sd = _hf("BlipModel").state_dict()
    converted = convert_hf_state_dict(sd)
    assert "logit_scale" not in converted and not any(k.startswith(("visual_projection", "text_projection")) for k in converted)
    assert not any(".pooler." in k for k in converted)
    assert "text_encoder.embeddings.word_embeddings.weight" in converted

    from transformers import BlipVisionConfig, BlipVisionModel

    bare = BlipVisionModel(BlipVisionConfig(**VISION)).state_dict()
    assert is_hf_state_dict(bare)
    assert set(convert_hf_state_dict(bare)) == {"visual_encoder." + k for k in _ours(False, False).visual_encoder.state_dict()}

    cap = _hf("BlipForConditionalGeneration").state_dict()
    cap.pop("text_decoder.cls.predictions.decoder.weight")  # a file that stores only one side of the tie
    out = convert_hf_state_dict(cap)
    assert out["text_decoder.cls.predictions.decoder.weight"] is out["text_decoder.bert.embeddings.word_embeddings.weight"]


def test_official_dict_is_not_hf():
    official = {"visual_encoder.cls_token": torch.zeros(1, 1, 4), "text_encoder.embeddings.position_ids": torch.zeros(1, 4)}
    assert not is_hf_state_dict(official)


def test_unknown_vision_key_is_an_error():
    from lavislite.common.errors import CheckpointError

    with pytest.raises(CheckpointError, match="qformer"):
        convert_hf_state_dict({"vision_model.qformer.weight": torch.zeros(1)})
