

import pytest


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    """(shapes world, vocab dir, tokenizer size, scratch root), shared by the task tests."""
    from tests.helpers.video import vocab, world

    root = tmp_path_factory.mktemp("video_tasks")
    w = world(root / "world")
    vdir, n = vocab(w, root / "vocab")
    return w, vdir, n, root
