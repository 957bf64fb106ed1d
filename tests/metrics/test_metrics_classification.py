"""Plain accuracy (NLVR2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lavislite.common.errors import DataError
from lavislite.metrics.classification import accuracy


def test_accuracy_values_and_input_kinds():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 50.0
    assert accuracy(torch.tensor([1, 0, 1]), np.array([1, 0, 1])) == 100.0
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0]])
    assert accuracy(logits.argmax(1), torch.tensor([1, 1, 1])) == pytest.approx(200 / 3)
    assert accuracy(["yes", "no"], ["yes", "yes"]) == 50.0


def test_accuracy_errors():
    with pytest.raises(DataError, match="nothing to evaluate"):
        accuracy([], [])
    with pytest.raises(DataError, match="3 predictions but 2 labels"):
        accuracy([1, 0, 1], [1, 0])
    with pytest.raises(DataError, match="argmax"):
        accuracy(torch.zeros(3, 2), [0, 1, 0])
