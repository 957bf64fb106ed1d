"""Helpers of the caption head tests (a unique module name: conftest.py is not importable by name)."""

import torch

WORDS = (
    "a picture of the red blue green yellow circle square triangle star on left right next to above below two "
    "small big shapes table in row man woman dog sitting beach with her"
).split()
CAPTIONS = [
    "a picture of a red circle on the left",
    "a picture of two small blue squares",
    "a picture of a big green triangle above a yellow star",
    "a picture of a woman sitting on the beach with her dog",
]


def tiny_med(tok, **extra) -> dict:
    return {"vocab_size": len(tok), **extra}


def make_model(arch, tok, seed=0, **overrides):
    """A tiny model of ``arch`` (random weights) on the test tokenizer, in eval mode."""
    from lavislite.common.config import model_type_config
    from lavislite.common.registry import registry

    cls = registry.get_model_class(arch)
    med = tiny_med(tok, **overrides.pop("med_overrides", {}))
    cfg = model_type_config(cls, "tiny", {"med_overrides": med, **overrides})
    torch.manual_seed(seed)
    return cls.from_config(cfg.model, tokenizer=tok).eval()


def randomise(model, seed, scale=0.15):
    """Larger random weights than the init (logits far from uniform); LayerNorm weights near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            offset = 1.0 if "norm" in name.lower() and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * scale + offset)


def hf_configs(tok, hidden=32, image_size=32, **text_extra):
    """Tiny transformers BlipConfig dicts matching the tiny lavislite yaml (BLIP's ViT eps 1e-6)."""
    text = dict(
        vocab_size=len(tok), hidden_size=hidden, encoder_hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        label_smoothing=0.1, bos_token_id=tok.bos_token_id, sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id,
        pad_token_id=tok.pad_token_id, **text_extra,
    )
    vision = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=8, layer_norm_eps=1e-6, attention_dropout=0.0)
    return text, vision


def trim(row, pad):
    row = row.tolist()
    while row and row[-1] == pad:
        row.pop()
    return row
