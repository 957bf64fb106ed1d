"""Model parts a family registers from outside lavislite: checkpoint converters, vision encoders, tokenizers."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lavislite.common.checkpoint import (
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from lavislite.common.config import model_type_config
from lavislite.common.errors import CheckpointError
from lavislite.common.registry import registry
from lavislite.models.base_model import BaseModel

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread


@pytest.fixture
def registered():
    """Register test entries; unregister them afterwards."""
    made: list[tuple] = []

    def add(reg, name, obj):
        reg.register(name, obj)
        made.append((reg, name))
        return obj

    yield add
    for reg, name in made:
        reg.unregister(name)


class OtherFamilyConverter:
    """A second family's foreign layout: ``enc/<name>`` -> ``encoder.<name>``."""

    name = "toy_slash_layout"

    @staticmethod
    def detect(keys):
        return any(k.startswith("enc/") for k in keys)

    @staticmethod
    def convert(sd):
        return {k.replace("enc/", "encoder.", 1): v for k, v in sd.items()}


class ToyFamily(BaseModel):
    checkpoint_converters = ("toy_slash_layout",)

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 4)


def test_a_family_registers_its_converter_without_editing_lavislite(registered, tmp_path):
    registered(registry.checkpoint_converters, "toy_slash_layout", OtherFamilyConverter)
    torch.manual_seed(0)
    source = ToyFamily()
    path = save_checkpoint({k.replace("encoder.", "enc/"): v for k, v in source.state_dict().items()}, tmp_path / "w.safetensors")
    model = ToyFamily()
    report = model.load_checkpoint(path)
    assert report.clean and report.converter == "toy_slash_layout"
    assert torch.equal(model.encoder.weight, source.encoder.weight)
    # reading alone applies no converter unless asked
    assert set(read_state_dict(path)) == {"enc/weight", "enc/bias"}
    assert set(read_state_dict(path, converters=["toy_slash_layout"])) == {"encoder.weight", "encoder.bias"}


def test_blip_converter_only_runs_for_blip_models(registered):
    registered(registry.checkpoint_converters, "toy_slash_layout", OtherFamilyConverter)
    # transformers BLIP-2 names (vision_model.* beside qformer.*) have no BLIP equivalent: a BLIP model says so,
    # a model of another family is not asked whether its checkpoint is "BLIP (not BLIP-2)"
    sd = {"vision_model.embeddings.patch_embedding.weight": torch.zeros(4, 3, 2, 2),
          "vision_model.encoder.layers.0.self_attn.qkv.weight": torch.zeros(12, 4),
          "qformer.layer.0.weight": torch.zeros(4, 4), "encoder.weight": torch.zeros(4, 4), "encoder.bias": torch.zeros(4)}
    report = load_checkpoint(ToyFamily(), sd, strict=False)
    assert report.converter is None and "qformer.layer.0.weight" in report.unexpected
    blip_cls = registry.get_model_class("blip_caption")
    assert "blip_transformers" in blip_cls.checkpoint_converters
    converter = registry.get_checkpoint_converter("blip_transformers")
    assert converter.detect(sd.keys())
    with pytest.raises(CheckpointError, match="BLIP \\(not BLIP-2\\)"):
        converter.convert({**sd, "vision_model.qformer_bridge.weight": torch.zeros(1)})


def _tiny_caption_cfg(**extra):
    cfg = model_type_config(registry.get_model_class("blip_caption"), "tiny", {})
    node = OmegaConf.to_container(cfg.model)
    node.update(extra)
    return OmegaConf.create(node)


class TinyConvEncoder(nn.Module):
    """A second family's vision encoder: (B, 3, H, W) -> (B, tokens, width), no ViT."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, kernel_size=8, stride=8)

    def forward(self, images):
        return self.conv(images).flatten(2).transpose(1, 2)


def test_vision_encoder_factory_builds_blip_vit_as_before():
    from lavislite.models.vit import VisionTransformer

    cfg = _tiny_caption_cfg()
    vit, width = registry.get_vision_encoder("blip_vit")(cfg)
    assert isinstance(vit, VisionTransformer) and width == 32 and len(vit.blocks) == 2
    assert "blip_vit" in registry.list_vision_encoders()


def test_a_registered_vision_encoder_replaces_the_vit(registered, tiny_tokenizer):
    registered(registry.vision_encoders, "toy_conv", lambda cfg: (TinyConvEncoder(int(cfg.get("toy_width", 32))), 32))
    cls = registry.get_model_class("blip_caption")
    model = cls.from_config(_tiny_caption_cfg(vision_encoder="toy_conv", med_overrides={"vocab_size": len(tiny_tokenizer),
                            "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}),
                            tokenizer=tiny_tokenizer)
    assert isinstance(model.visual_encoder, TinyConvEncoder)
    out = model.generate({"image": torch.rand(1, 3, 32, 32)}, num_beams=1, max_length=14)
    assert len(out) == 1


def test_a_registered_tokenizer_is_used_by_a_head(registered, tiny_tokenizer):
    calls = []

    def load(source):
        calls.append(source)
        return tiny_tokenizer

    registered(registry.tokenizers, "toy_tokenizer", load)

    class OwnTokenizerCaption(registry.get_model_class("blip_caption")):
        TOKENIZER = "toy_tokenizer"

    model = OwnTokenizerCaption.from_config(_tiny_caption_cfg(tokenizer="/some/vocab", med_overrides={
        "vocab_size": len(tiny_tokenizer), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}))
    assert model.tokenizer is tiny_tokenizer and calls == ["/some/vocab"]
    assert "bert_wordpiece" in registry.list_tokenizers()
