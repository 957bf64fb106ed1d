"""Tiny random CapFilt models and tiny webdataset shards for the capfilt tests."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = ["red", "green", "blue", "square", "circle", "cross", "a", "picture", "of", "the", "small", "big", "on", "left", "right"]


def make_checkpoint(name: str, tokenizer: Path, path: Path, seed: int = 0) -> Path:
    import torch

    from lavislite.api import load_model
    from lavislite.common.checkpoint import save_checkpoint
    from lavislite.models.tokenizer import init_tokenizer

    torch.manual_seed(seed)
    model = load_model(name, "tiny", tokenizer=str(tokenizer), **{"model.med_overrides.vocab_size": len(init_tokenizer(tokenizer))})
    save_checkpoint(model, path)
    return path


def png_bytes(rng: np.random.Generator, size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_shard(path: Path, n: int, seed: int = 0, corrupt: tuple[int, ...] = (), json_text: bool = False) -> Path:
    """``n`` samples ``s<i>`` with a png and a txt (or json) alt-text; indices in ``corrupt`` get broken image bytes."""
    rng = np.random.default_rng(seed)
    trng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            members = {"png": b"not an image" if i in corrupt else png_bytes(rng)}
            text = " ".join(trng.choices(WORDS, k=5))
            if json_text:
                members["json"] = json.dumps({"caption": [text, "image.jpg"], "noise": "filename"}).encode()
            else:
                members["txt"] = text.encode()
            for ext, data in members.items():
                info = tarfile.TarInfo(f"s{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def config(tmp: Path, tok: Path, cap_ckpt: Path, itm_ckpt: Path, shards: list[str], out: Path, **over) -> dict:
    vocab = {"med_overrides": {"vocab_size": _vocab(tok)}}
    cfg = {
        "input": {"shards": shards},
        "captioner": {"model": "blip_caption:tiny", "checkpoint": str(cap_ckpt), "tokenizer": str(tok), "options": vocab},
        "filter": {"model": "blip_image_text_matching:tiny", "checkpoint": str(itm_ckpt), "tokenizer": str(tok), "options": vocab},
        "generation": {"num_captions": 2, "max_length": 8, "min_length": 3},
        "output": {"dir": str(out)},
        "run": {"batch_size": 2, "device": "cpu", "progress": False},
    }
    for key, value in over.items():
        section, _, k = key.partition("__")
        cfg.setdefault(section, {})[k] = value
    return cfg


def _vocab(tok: Path) -> int:
    from lavislite.models.tokenizer import init_tokenizer

    return len(init_tokenizer(tok))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
