"""Tiny models and their one WordPiece vocabulary, built here (no downloads).

The root ``tests/conftest.py`` turns these into the fixtures ``tiny_tokenizer``, ``tiny_tokenizer_dir``
and ``build_tiny``; import from here only what a fixture cannot give (the corpus, ``make_tiny``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from lavislite.common.config import model_type_config
from lavislite.common.registry import registry

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
VOCAB_SIZE = 120


def write_tiny_vocab(out_dir: Path) -> Path:
    """Train the tests' WordPiece vocabulary into ``out_dir`` (``vocab.txt``); return the directory."""
    from lavislite.models.tokenizer import build_wordpiece_vocab

    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=8)) for _ in range(400)] + CAPTIONS
    build_wordpiece_vocab(texts, VOCAB_SIZE, out_dir)
    return out_dir


def make_tiny(arch: str, tokenizer: Any, seed: int = 0, model_type: str = "tiny", **overrides: Any) -> torch.nn.Module:
    """A ``model_type`` (default ``tiny``) model of ``arch`` with random weights (seeded) on ``tokenizer``.

    ``overrides`` replace keys of the model config; the text model's vocabulary follows the tokenizer.
    """
    cls = registry.get_model_class(arch)
    med = {"vocab_size": len(tokenizer), **overrides.pop("med_overrides", {})}
    cfg = model_type_config(cls, model_type, {"med_overrides": med, **overrides})
    torch.manual_seed(seed)
    return cls.from_config(cfg.model, tokenizer=tokenizer)


def tiny_model_types(builtin_only: bool = True) -> list[tuple[str, str]]:
    """Every registered ``(name, model_type)`` whose type is ``tiny`` or starts with ``tiny_``.

    ``builtin_only`` leaves out models that test modules register for themselves.
    """
    rows = []
    for name in registry.list_models():
        cls = registry.get_model_class(name)
        if builtin_only and not cls.__module__.startswith("lavislite."):
            continue
        rows += [(name, t) for t in getattr(cls, "model_types", lambda: [])() if t == "tiny" or t.startswith("tiny_")]
    return rows
