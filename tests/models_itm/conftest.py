"""Fixtures of the ITM / feature-extractor tests; the tiny-model helpers are shared with tests/models_caption."""

import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models_caption"))
from captest_utils import CAPTIONS, WORDS  # noqa: E402


@pytest.fixture(scope="session")
def itm_tok(tmp_path_factory):
    from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer

    rng = random.Random(1)
    texts = [" ".join(rng.choices(WORDS, k=8)) for _ in range(400)] + CAPTIONS
    out = tmp_path_factory.mktemp("itm_vocab")
    build_wordpiece_vocab(texts, 120, out)
    return init_tokenizer(out)


@pytest.fixture()
def itm_images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
