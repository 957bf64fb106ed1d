"""Tiny BLIP models on a WordPiece vocabulary built here (no downloads), shared by the pre-training and
retrieval tests (their conftests import the fixtures)."""

import pytest
import torch

from lavislite.common.config import model_type_config
from lavislite.common.registry import registry

TEXTS = [
    "a red circle on the left", "a blue square next to a green triangle", "two small shapes on a table",
    "the big yellow star above a purple circle", "three green squares in a row", "an orange triangle",
] * 10


@pytest.fixture(scope="session")
def tiny_tok(tmp_path_factory):
    from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer

    out = tmp_path_factory.mktemp("vocab_tiny_blip")
    build_wordpiece_vocab(TEXTS, 120, out)
    return init_tokenizer(out)


def tiny_med(tok) -> dict:
    return {"vocab_size": len(tok), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 64}


def build_tiny(arch: str, tok, seed: int = 0, **overrides):
    cls = registry.get_model_class(arch)
    cfg = model_type_config(cls, "tiny", {"med_overrides": tiny_med(tok), **overrides})
    torch.manual_seed(seed)
    return cls.from_config(cfg.model, tokenizer=tok)


@pytest.fixture
def build(tiny_tok):
    """build(arch, seed=0, **overrides) -> a tiny model of that arch sharing the test tokenizer."""
    return lambda arch, seed=0, **over: build_tiny(arch, tiny_tok, seed, **over)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster and does not thrash a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
