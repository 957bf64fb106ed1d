"""Helpers of the inference CLI tests: tiny checkpoints, small images, CLI flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

WORDS = ["red", "green", "blue", "square", "circle", "cross", "a", "picture", "of", "the", "is", "what", "color",
         "shape", "small", "big", "there", "on", "dark", "background", "yes", "no"]


def vocab_option(tokenizer: Path) -> list[str]:
    """CLI flags sizing the tiny text model's vocabulary to the tokenizer (so every generated id decodes)."""
    from lavislite.models.tokenizer import init_tokenizer

    return ["--option", f"med_overrides.vocab_size={len(init_tokenizer(tokenizer))}"]


def make_checkpoint(name: str, tokenizer: Path, path: Path, seed: int = 0) -> Path:
    """A tiny ``name`` model with random (seeded) weights saved as a checkpoint file."""
    from lavislite.api import load_model
    from lavislite.common.checkpoint import save_checkpoint
    from lavislite.models.tokenizer import init_tokenizer

    torch.manual_seed(seed)
    vocab = len(init_tokenizer(tokenizer))
    model = load_model(name, "tiny", tokenizer=str(tokenizer), **{"model.med_overrides.vocab_size": vocab})
    save_checkpoint(model, path)
    return path


def write_images(folder: Path, n: int, size: int = 40, prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 255, (size, size + 8 * (i % 3), 3), dtype=np.uint8)
        p = folder / f"{prefix}{i:02d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def write_videos(folder: Path, n: int, frames: int = 6, size: int = 32) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        p = folder / f"vid{i}.mp4"
        w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 5, (size, size))
        for _ in range(frames):
            w.write(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        w.release()
        paths.append(p)
    return paths
