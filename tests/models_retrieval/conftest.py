"""Tiny models on a WordPiece vocabulary built here (no downloads): fixtures from tests/tiny_blip.py."""

from tests.tiny_blip import _one_thread, build, build_tiny, tiny_med, tiny_tok  # noqa: F401  (pytest fixtures)
