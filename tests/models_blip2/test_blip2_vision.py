"""BLIP-2's image encoders: CLIP ViT-L against transformers' CLIPVisionModel, the EVA layout and precision."""

import pytest
import torch

from lavislite.common.errors import ConfigError, DataError, RegistryError
from lavislite.common.registry import registry
from lavislite.models.blip2.vision import (
    create_clip_vit_l,
    create_eva_vit_g,
    resize_position_embedding,
)

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread


def _clip_from_hf(hf_state: dict) -> dict:
    """transformers CLIPVisionModel keys -> OpenAI/LAVIS CLIP keys (q/k/v fused into in_proj)."""
    out = {
        "class_embedding": hf_state["embeddings.class_embedding"],
        "conv1.weight": hf_state["embeddings.patch_embedding.weight"],
        "positional_embedding": hf_state["embeddings.position_embedding.weight"],
        "ln_pre.weight": hf_state["pre_layrnorm.weight"],
        "ln_pre.bias": hf_state["pre_layrnorm.bias"],
    }
    i = 0
    while f"encoder.layers.{i}.layer_norm1.weight" in hf_state:
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat([hf_state[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[dst + f"attn.out_proj.{kind}"] = hf_state[src + f"self_attn.out_proj.{kind}"]
            for a, b in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out[dst + f"{b}.{kind}"] = hf_state[src + f"{a}.{kind}"]
        i += 1
    return out


def test_clip_l_equals_transformers_second_last_layer():
    """LAVIS builds 23 of CLIP-L's 24 blocks: our L-block tower equals transformers' (L+1)-layer model's
    hidden state after L layers (``ln_pre`` applied, no ``ln_post``)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    hf = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                                          image_size=28, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5)).eval()
    ours = create_clip_vit_l(28, precision="fp32", width=32, layers=2, heads=4).eval()
    converted = _clip_from_hf(hf.state_dict())
    ours.load_state_dict({k: v for k, v in converted.items() if not k.startswith("transformer.resblocks.2.")}, strict=True)
    image = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(pixel_values=image, output_hidden_states=True).hidden_states[-2]
        out = ours(image)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_eva_layout_and_keys():
    eva = create_eva_vit_g(28, precision="fp32", embed_dim=32, depth=2, num_heads=4, patch_size=14)
    keys = set(eva.state_dict())
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.1.attn.qkv.weight", "blocks.1.attn.q_bias",
            "blocks.1.attn.v_bias", "blocks.1.mlp.fc1.weight", "blocks.1.norm2.weight"} <= keys
    assert "blocks.1.attn.qkv.bias" not in keys and not any(k.startswith("norm.") for k in keys)  # no final norm
    assert eva(torch.randn(1, 3, 28, 28)).shape == (1, 5, 32)
    with torch.device("meta"):
        real = create_eva_vit_g(224, precision="fp32")
    assert len(real.blocks) == 39 and real.blocks[0].mlp.fc1.out_features == 6144 and real.pos_embed.shape == (1, 257, 1408)
    with torch.device("meta"):
        clip = create_clip_vit_l(224, precision="fp32")
    assert len(clip.transformer.resblocks) == 23 and clip.positional_embedding.shape == (257, 1024)


@pytest.mark.parametrize("name", ["eva_clip_g", "clip_L"])
def test_half_precision_keeps_norms_and_embeddings_fp32(name):
    sizes = {"eva_clip_g": dict(embed_dim=32, depth=2, num_heads=4, patch_size=8),
             "clip_L": dict(width=32, layers=2, heads=4, patch_size=8)}[name]
    torch.manual_seed(0)
    build = registry.get_vision_encoder(name)  # the factory entry BLIP-2's vit_model names
    full = build({"image_size": 32, "vit_precision": "fp32", "vit_overrides": sizes})[0].eval()
    torch.manual_seed(0)
    half = build({"image_size": 32, "vit_precision": "bf16", "vit_overrides": sizes})[0].eval()
    dtypes = {n: p.dtype for n, p in half.named_parameters()}
    assert all(d == torch.bfloat16 for n, d in dtypes.items() if n.endswith(("qkv.weight", "fc1.weight", "c_fc.weight", "in_proj_weight")))
    assert all(d == torch.float32 for n, d in dtypes.items() if "norm" in n or "ln_" in n or "pos" in n or n.endswith(("q_bias", "v_bias")))
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = full(image), half(image)
    assert torch.isfinite(b.float()).all()
    assert (a - b.float()).abs().max() < 0.1 * a.abs().max()


def test_errors_and_resize():
    with pytest.raises(RegistryError, match="vit_h"):
        registry.get_vision_encoder("vit_h")
    with pytest.raises(ConfigError, match="unknown option"):
        create_eva_vit_g(28, depthh=2)
    with pytest.raises(ConfigError, match="vit_precision"):
        create_eva_vit_g(28, precision="int4", embed_dim=32, depth=1, num_heads=4, patch_size=14)
    eva = create_eva_vit_g(28, precision="fp32", embed_dim=32, depth=1, num_heads=4, patch_size=14)
    with pytest.raises(DataError, match="image_size=56"):
        eva(torch.randn(1, 3, 56, 56))
    pos = torch.randn(1, 17, 8)
    assert resize_position_embedding(pos, 17, align_corners=False) is pos or torch.equal(resize_position_embedding(pos, 17, align_corners=False), pos)
    assert resize_position_embedding(pos[0], 37, align_corners=True).shape == (37, 8)
    with pytest.raises(ValueError, match="square"):
        resize_position_embedding(pos, 20, align_corners=False)
