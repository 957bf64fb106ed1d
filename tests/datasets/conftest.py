"""Registers the ``tiny`` fixture (helpers live in dataset_fixtures.py: conftest modules share one name)."""

from dataset_fixtures import tiny  # noqa: F401
