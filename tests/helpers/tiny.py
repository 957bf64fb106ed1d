"""Tiny models and their one WordPiece vocabulary, built here (no downloads).

The root ``tests/conftest.py`` turns these into the fixtures ``tiny_tokenizer``, ``tiny_tokenizer_dir``
and ``build_tiny``; import from here only what a fixture cannot give (the corpus, ``make_tiny``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lavislite.common.config import model_type_config
from lavislite.common.registry import registry

# Every word the tiny-model tests write, so each is one token of a fixed vocabulary.
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
EXTRA_WORDS = (
    "an is are there what how many which image photo purple orange white black dark background color colour shape "
    "cross three four dogs cat standing holding yes no tennis racket pizza bus train sky water down"
).split()


def write_tiny_vocab(out_dir: Path) -> Path:
    """Write the tests' fixed WordPiece vocabulary (``vocab.txt``) into ``out_dir``; return the directory.

    Fixed, not trained: the trainer's tie-breaking varies between runs, and the tests must not.
    Special tokens take ids 0..4, then whole words, then single letters and their ``##`` pieces.
    """
    from lavislite.models.tokenizer import SPECIAL_TOKENS

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = sorted(set(WORDS + EXTRA_WORDS) - set(letters))
    tokens = SPECIAL_TOKENS + words + letters + [f"##{c}" for c in letters] + list(".,?!'-")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return out_dir


def make_tiny(arch: str, tokenizer: Any, seed: int = 0, model_type: str = "tiny", **overrides: Any) -> torch.nn.Module:
    """A ``model_type`` (default ``tiny``) model of ``arch`` with random weights (seeded) on ``tokenizer``.

    ``overrides`` replace keys of the model config; the text model's vocabulary follows the tokenizer.
    """
    cls = registry.get_model_class(arch)
    schema = model_type_config(cls, model_type, {}).model
    # the text transformer's section: MED for BLIP, the Q-Former for BLIP-2
    text_key = next(k for k in ("med_overrides", "qformer_overrides") if k in schema)
    text = {"vocab_size": len(tokenizer), **overrides.pop(text_key, {})}
    cfg = model_type_config(cls, model_type, {text_key: text, **overrides})
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
