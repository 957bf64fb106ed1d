"""Session fixtures: one tiny tokenizer and, on demand, one tiny checkpoint per model (built once)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from inference_testlib import make_checkpoint, make_tokenizer, vocab_option  # noqa: E402


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("inference_vocab"))


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory, tok_dir):
    """``ckpt("blip_caption") -> Path`` of a tiny seeded checkpoint (cached for the session)."""
    root = tmp_path_factory.mktemp("inference_ckpts")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            suffix = ".safetensors" if name == "blip_vqa" else ".pth"  # both formats go through the CLI
            made[name] = make_checkpoint(name, tok_dir, root / f"{name}{suffix}")
        return made[name]

    return get


@pytest.fixture()
def model_args(ckpt, tok_dir):
    """``model_args("blip_caption")`` -> the CLI flags selecting that tiny checkpoint."""

    def get(name: str) -> list[str]:
        return ["--model", f"{name}:tiny", "--checkpoint", str(ckpt(name)), "--tokenizer", str(tok_dir), *vocab_option(tok_dir)]

    return get

