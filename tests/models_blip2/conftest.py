"""Tiny BLIP-2 models on the WordPiece vocabulary of tests/tiny_blip.py (no downloads)."""

import pytest
import torch

from lavislite.common.config import model_type_config
from lavislite.common.registry import registry
from tests.tiny_blip import _one_thread, tiny_tok  # noqa: F401  (pytest fixtures)


def build_tiny_blip2(arch: str, tok, seed: int = 0, **overrides):
    """A tiny BLIP-2 head (model type ``tiny``) whose Q-Former vocabulary is the test tokenizer's."""
    cls = registry.get_model_class(arch)
    qformer = {"vocab_size": len(tok), **overrides.pop("qformer_overrides", {})}
    cfg = model_type_config(cls, "tiny", {"qformer_overrides": qformer, **overrides})
    torch.manual_seed(seed)
    return cls.from_config(cfg.model, tokenizer=tok)


@pytest.fixture
def build_blip2(tiny_tok):
    """build_blip2(arch, seed=0, **overrides) -> a tiny BLIP-2 head sharing the test tokenizer."""
    return lambda arch="blip2", seed=0, **over: build_tiny_blip2(arch, tiny_tok, seed, **over)
