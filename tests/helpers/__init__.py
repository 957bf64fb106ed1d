"""Shared test helpers, imported as ``tests.helpers.<name>`` (the repository root is on sys.path)."""
