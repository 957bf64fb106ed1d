"""Loading a model for a command: the api call plus error messages that name the command-line fix."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from lavislite.common.errors import CheckpointError, ConfigError, DownloadError
from lavislite.inference.options import parse_model, parse_overrides

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Loaded:
    model: Any
    vis_processors: dict[str, Any]
    txt_processors: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    name: str
    model_type: str

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs on the model's device and in its dtype."""
        return x.to(self.device, dtype=self.dtype, non_blocking=True)


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def load(args: argparse.Namespace, device: torch.device | None = None) -> Loaded:
    """``load_model_and_preprocess`` from ``--model/--checkpoint/--tokenizer/--device/--dtype/--option``.

    Weight and tokenizer failures are re-raised (same error type) with the flag that fixes them added.
    """
    from lavislite.api import load_model_and_preprocess

    name, mtype = parse_model(args.model)
    overrides = parse_overrides(getattr(args, "option", []))
    if getattr(args, "tokenizer", None):
        overrides["tokenizer"] = str(args.tokenizer)
    device = device or pick_device(getattr(args, "device", None))
    dtype = _DTYPES[getattr(args, "dtype", "fp32") or "fp32"]
    try:
        model, vis, txt = load_model_and_preprocess(name, mtype, device=device, checkpoint=args.checkpoint, dtype=dtype, **overrides)
    except DownloadError as exc:
        raise DownloadError(
            f"cannot get the weights of {name}:{mtype}: {exc} To use a file you already have, pass --checkpoint PATH "
            f"(a .pth/.safetensors file or a transformers BLIP directory)."
        ) from exc
    except CheckpointError as exc:
        where = f"--checkpoint {args.checkpoint}" if args.checkpoint else f"the weights of {name}:{mtype}"
        raise type(exc)(f"{where}: {exc}") from exc
    _check_tokenizer(model, name, mtype)
    return Loaded(model, vis, txt, device, dtype, name, mtype)


def _check_tokenizer(model: Any, name: str, mtype: str) -> None:
    """Load the tokenizer now (it is lazy) so a missing one fails before any input is read."""
    if not hasattr(model, "_tokenizer_source"):
        return
    if getattr(model, "_tokenizer", None) is None and not getattr(model, "_tokenizer_source", None):
        raise ConfigError(f"{name}:{mtype} names no tokenizer; pass --tokenizer DIR (a directory holding vocab.txt)")
    try:
        model.tokenizer
    except ConfigError as exc:
        raise ConfigError(f"{exc} From the command line: --tokenizer DIR (a directory holding vocab.txt).") from exc
