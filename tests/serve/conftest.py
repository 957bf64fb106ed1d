"""Session fixtures for the serving tests: one tiny tokenizer and tiny seeded checkpoints of the retrieval,
caption and VQA heads (built once), their specs, and small image folders."""

from pathlib import Path

import pytest
import torch

from tests.helpers.inference import make_checkpoint, vocab_option


@pytest.fixture(scope="session")
def spec_of(tmp_path_factory, tiny_tokenizer_dir):
    """``spec_of("blip_retrieval", seed=0) -> ModelSpec`` of a tiny seeded checkpoint (cached)."""
    from lavislite.serve.identity import ModelSpec

    root = tmp_path_factory.mktemp("serve_ckpts")
    made = {}

    def get(name: str, seed: int = 0) -> ModelSpec:
        if (name, seed) not in made:
            ckpt = make_checkpoint(name, tiny_tokenizer_dir, root / f"{name}_{seed}.pth", seed=seed)
            made[name, seed] = ModelSpec(name, "tiny", str(ckpt), str(tiny_tokenizer_dir), tuple(vocab_option(tiny_tokenizer_dir)[1:]))
        return made[name, seed]

    return get


@pytest.fixture(scope="session")
def loaded(spec_of):
    """``loaded("blip_retrieval") -> LoadedModel`` (fp32, cpu; cached)."""
    from lavislite.serve.identity import load_spec

    cache = {}

    def get(name: str, seed: int = 0):
        if (name, seed) not in cache:
            cache[name, seed] = load_spec(spec_of(name, seed), "cpu")
        return cache[name, seed]

    return get


def write_world(folder: Path, n: int, size: int = 32, seed: int = 0) -> list[Path]:
    """``n`` scenes of the demo's shapes world as png files, with their canonical captions in ``captions.txt``."""
    import random

    import numpy as np

    from lavislite.demo.shapes import render_scene, sample_scene, save_image
    from lavislite.demo.world import make_captions

    folder.mkdir(parents=True, exist_ok=True)
    rng, nprng = random.Random(seed), np.random.default_rng(seed)
    paths, caps = [], []
    for i in range(n):
        scene = sample_scene(rng)
        path = folder / f"scene{i:02d}.png"
        save_image(render_scene(scene, size, nprng), path)
        caps.append(make_captions(scene, rng, 1)[0])
        paths.append(path)
    (folder.parent / f"{folder.name}_captions.txt").write_text("\n".join(caps) + "\n")
    return paths


@pytest.fixture(scope="session")
def world_index(tmp_path_factory, loaded):
    """(image folder, index folder) of 12 shapes-world scenes indexed by the tiny retrieval model."""
    from lavislite.serve.build import build_index
    from lavislite.serve.sources import discover_entries

    root = tmp_path_factory.mktemp("serve_world")
    write_world(root / "images", 12)
    entries, _ = discover_entries([str(root / "images")])
    texts = (root / "images_captions.txt").read_text().split("\n")[:-1]
    build_index(loaded("blip_retrieval"), entries, str(root / "index"), texts=texts, show_progress=False)
    return root / "images", root / "index"


def spec_flags(spec) -> list[str]:
    """The command-line flags selecting ``spec``."""
    flags = ["--model", f"{spec.name}:{spec.model_type}", "--checkpoint", spec.checkpoint, "--tokenizer", spec.tokenizer]
    for opt in spec.options:
        flags += ["--option", opt]
    return flags


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster and does not thrash a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
