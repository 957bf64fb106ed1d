"""Session fixtures: tiny random captioner / ITM checkpoints on the shared tiny tokenizer (built once)."""


import pytest

from tests.helpers.capfilt import make_checkpoint


@pytest.fixture(scope="session")
def models(tmp_path_factory, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("capfilt_models")
    tok = tiny_tokenizer_dir
    return {"tok": tok, "cap": make_checkpoint("blip_caption", tok, root / "cap.pth"),
            "itm": make_checkpoint("blip_image_text_matching", tok, root / "itm.pth", seed=1)}
