"""Helpers of the VQA head tests (a unique module name: conftest.py is not importable by name)."""

import torch

WORDS = (
    "what color is the cat dog red blue green yes no how many two three four left right image there "
    "are on table man woman holding sitting standing white black tennis pizza bus train sky water"
).split()
ANSWERS = ["red", "blue", "green", "yes", "no", "two", "three", "four", "tennis racket", "pizza", "white bus",
           "black cat", "man", "woman", "sky", "water", "on table", "sitting down"]
QUESTIONS = ["what color is the cat", "how many dogs are there", "is the man sitting on the table",
             "what is the woman holding"]


def make_vqa(tokenizer, seed=0, **overrides):
    """A tiny BlipVQA (random weights, dropout off unless training)."""
    from lavislite.common.config import model_type_config
    from lavislite.models.blip.vqa import BlipVQA

    torch.manual_seed(seed)
    med = {"vocab_size": len(tokenizer), **overrides.pop("med_overrides", {})}
    cfg = model_type_config(BlipVQA, "tiny", {"med_overrides": med, **overrides})
    return BlipVQA.from_config(cfg.model, tokenizer=tokenizer)


def randomise(model, seed, scale=0.15):
    """Larger random weights than the init (so logits are far from uniform); LayerNorm weights near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            offset = 1.0 if "norm" in name.lower() and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * scale + offset)
