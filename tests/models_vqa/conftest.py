"""Fixtures of the VQA head tests: a tiny BlipVQA model and images."""


import pytest
import torch

from tests.helpers.vqa import QUESTIONS, make_vqa


@pytest.fixture()
def tiny_vqa(tiny_tokenizer):
    return make_vqa(tiny_tokenizer).eval()


@pytest.fixture()
def vqa_images():
    return torch.randn(len(QUESTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(3))
