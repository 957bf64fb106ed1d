"""Registers the ``tiny`` fixture of the dataset tests (its helpers live in tests/helpers/datasets.py)."""

from tests.helpers.datasets import tiny  # noqa: F401
