"""Helpers of the caption head tests: weight randomising, transformers configs, trimming."""

import torch


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
