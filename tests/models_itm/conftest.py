"""Fixtures of the ITM / feature-extractor tests: images."""


import pytest
import torch


@pytest.fixture()
def itm_images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
