import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # video_testlib

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    """(shapes world, vocab dir, tokenizer size, scratch root), shared by the task tests."""
    from video_testlib import vocab, world

    root = tmp_path_factory.mktemp("video_tasks")
    w = world(root / "world")
    vdir, n = vocab(w, root / "vocab")
    return w, vdir, n, root
