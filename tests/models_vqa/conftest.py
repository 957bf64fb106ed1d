"""Fixtures of the VQA head tests: a tiny WordPiece tokenizer and tiny BlipVQA models."""

import random

import pytest
import torch

from vqa_testutils import ANSWERS, QUESTIONS, WORDS, make_vqa


@pytest.fixture(scope="session")
def vqa_tokenizer(tmp_path_factory):
    from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer

    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=8)) for _ in range(400)] + ANSWERS + QUESTIONS
    out = tmp_path_factory.mktemp("vqa_vocab")
    build_wordpiece_vocab(texts, 120, out)
    return init_tokenizer(out)


@pytest.fixture()
def tiny_vqa(vqa_tokenizer):
    return make_vqa(vqa_tokenizer).eval()


@pytest.fixture()
def vqa_images():
    return torch.randn(len(QUESTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(3))
