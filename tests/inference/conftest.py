"""Session fixtures: on demand, one tiny checkpoint per model (built once) on the shared tiny tokenizer."""

from pathlib import Path

import pytest

from tests.helpers.inference import make_checkpoint, vocab_option


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory, tiny_tokenizer_dir):
    """``ckpt("blip_caption") -> Path`` of a tiny seeded checkpoint (cached for the session)."""
    root = tmp_path_factory.mktemp("inference_ckpts")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            suffix = ".safetensors" if name == "blip_vqa" else ".pth"  # both formats go through the CLI
            made[name] = make_checkpoint(name, tiny_tokenizer_dir, root / f"{name}{suffix}")
        return made[name]

    return get


@pytest.fixture()
def model_args(ckpt, tiny_tokenizer_dir):
    """``model_args("blip_caption")`` -> the CLI flags selecting that tiny checkpoint."""

    def get(name: str) -> list[str]:
        return ["--model", f"{name}:tiny", "--checkpoint", str(ckpt(name)), "--tokenizer", str(tiny_tokenizer_dir), *vocab_option(tiny_tokenizer_dir)]

    return get

