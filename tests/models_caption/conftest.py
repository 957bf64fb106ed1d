"""Fixtures of the caption head tests: images."""


import pytest
import torch


@pytest.fixture()
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
