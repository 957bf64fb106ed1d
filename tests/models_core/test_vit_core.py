"""BLIP ViT: keys, shapes, transformers parity, pos-embed interpolation, gradient checkpointing."""

import pytest
import torch

from lavislite.common.errors import ConfigError
from lavislite.models.blip.convert import convert_hf_state_dict, is_hf_state_dict
from lavislite.models.vit import VisionTransformer, create_vit, interpolate_pos_embed

TINY = dict(patch_size=8, embed_dim=32, depth=2, num_heads=4)


def test_keys_and_output_shape():
    vit, width = create_vit("base", 32, **TINY)
    assert width == 32
    keys = set(vit.state_dict())
    expected = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    for i in range(2):
        for name in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            expected |= {f"blocks.{i}.{name}.weight", f"blocks.{i}.{name}.bias"}
    assert keys == expected
    assert vit.pos_embed.shape == (1, 17, 32)
    vit.eval()
    out = vit(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 17, 32)


def test_full_size_key_count_and_pos_embed():
    vit, width = create_vit("base", 384)
    assert width == 768 and len(vit.state_dict()) == 150 and vit.pos_embed.shape == (1, 577, 768)
    assert vit.blocks[0].norm1.eps == 1e-6


def test_bad_image_size_and_name():
    with pytest.raises(ConfigError, match="image_size=30"):
        create_vit("base", 30, **TINY)
    with pytest.raises(ConfigError, match="huge"):
        create_vit("huge", 224)


def test_large_default_drop_path_and_override():
    # tiny "large" keeps the original default drop_path 0.1 unless given explicitly
    vit, _ = create_vit("large", 32, **TINY)
    assert vit.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    vit, _ = create_vit("large", 32, drop_path_rate=0.0, **TINY)
    assert not hasattr(vit.blocks[-1].drop_path1, "drop_prob")  # Identity


def test_matches_transformers_blip_vision_model():
    from transformers import BlipVisionConfig, BlipVisionModel

    torch.manual_seed(0)
    cfg = BlipVisionConfig(
        hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, layer_norm_eps=1e-6, hidden_act="gelu",
    )
    hf = BlipVisionModel(cfg).eval()
    with torch.no_grad():  # random everything, LayerNorm affine included
        for p in hf.parameters():
            p.normal_(0, 0.2)
    sd = hf.state_dict()
    assert is_hf_state_dict(sd)
    ours, _ = create_vit("base", 32, **TINY)
    converted = convert_hf_state_dict(sd)
    assert all(k.startswith("visual_encoder.") for k in converted)
    converted = {k[len("visual_encoder."):]: v for k, v in converted.items()}
    missing, unexpected = ours.load_state_dict(converted, strict=True)
    assert not missing and not unexpected
    ours.eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=images).last_hidden_state
        got = ours(images)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_interpolate_pos_embed():
    pe = torch.randn(1, 197, 16)
    up = interpolate_pos_embed(pe, 576)
    assert up.shape == (1, 577, 16)
    torch.testing.assert_close(up[:, :1], pe[:, :1])
    down = interpolate_pos_embed(up, 196)
    assert down.shape == (1, 197, 16)
    assert interpolate_pos_embed(pe, 196) is pe  # unchanged when equal
    # a constant grid stays constant under bicubic resizing
    const = torch.cat([torch.zeros(1, 1, 4), torch.full((1, 196, 4), 0.5)], dim=1)
    torch.testing.assert_close(interpolate_pos_embed(const, 900)[:, 1:], torch.full((1, 900, 4), 0.5))
    # reference: explicit F.interpolate on the grid
    grid = pe[:, 1:].reshape(1, 14, 14, 16).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, size=(24, 24), mode="bicubic", align_corners=False)
    torch.testing.assert_close(up[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 576, 16))
    half = interpolate_pos_embed(pe.half(), 576)
    assert half.dtype == torch.float16 and half.shape == (1, 577, 16)


def test_grad_checkpointing_matches_plain():
    torch.manual_seed(0)
    plain = VisionTransformer(img_size=32, **TINY)
    ckpt = VisionTransformer(img_size=32, use_grad_checkpointing=True, ckpt_layer=1, **TINY)
    ckpt.load_state_dict(plain.state_dict())
    plain.train(), ckpt.train()
    x = torch.randn(2, 3, 32, 32)
    plain(x).square().sum().backward()
    ckpt(x).square().sum().backward()
    for (n, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=n)
    with pytest.raises(ConfigError):
        VisionTransformer(img_size=32, ckpt_layer=5, **TINY)
