"""The one test harness: a tiny WordPiece tokenizer (no downloads) and tiny models built on it.

Fixtures: ``tiny_tokenizer_dir`` / ``tiny_tokenizer`` (session), ``build_tiny(arch, seed=0, **overrides)``.
Helpers shared by several test folders live in ``tests/helpers/`` and are imported as ``tests.helpers.<name>``.
A test module marked ``pytest.mark.single_thread`` runs with one intra-op thread (tiny models: faster,
and kinder to a busy 2-core machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "single_thread: run with torch.set_num_threads(1)")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.tiny import write_tiny_vocab

    return write_tiny_vocab(tmp_path_factory.mktemp("tiny_vocab"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir: Path) -> Any:
    from lavislite.models.tokenizer import init_tokenizer

    return init_tokenizer(tiny_tokenizer_dir)


@pytest.fixture
def build_tiny(tiny_tokenizer: Any) -> Callable[..., Any]:
    """``build_tiny(arch, seed=0, **overrides)`` -> a tiny model of ``arch`` on the shared tokenizer."""
    from tests.helpers.tiny import make_tiny

    return lambda arch, seed=0, **overrides: make_tiny(arch, tiny_tokenizer, seed, **overrides)


@pytest.fixture(autouse=True)
def _single_thread(request: pytest.FixtureRequest):
    if request.node.get_closest_marker("single_thread") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
