"""Fixtures of the caption head tests: a tiny WordPiece tokenizer (no downloads) and images."""

import random

import pytest
import torch

from captest_utils import CAPTIONS, WORDS


@pytest.fixture(scope="session")
def cap_tok(tmp_path_factory):
    from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer

    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=8)) for _ in range(400)] + CAPTIONS
    out = tmp_path_factory.mktemp("caption_vocab")
    build_wordpiece_vocab(texts, 120, out)
    return init_tokenizer(out)


@pytest.fixture()
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
