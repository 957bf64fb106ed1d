"""Session fixtures: a tiny tokenizer and tiny random captioner / ITM checkpoints (built once)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from capfilt_testlib import make_checkpoint, make_tokenizer


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("capfilt_models")
    tok = make_tokenizer(root / "vocab")
    return {"tok": tok, "cap": make_checkpoint("blip_caption", tok, root / "cap.pth"),
            "itm": make_checkpoint("blip_image_text_matching", tok, root / "itm.pth", seed=1)}
