"""Loading a model for a command: the api call plus error messages that name the command-line fix."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any

import torch

from lavislite.common.errors import CheckpointError, ConfigError, DownloadError
from lavislite.common.utils import resolve_device
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
    folder: Any = None  # the model folder it came from, if any

    @property
    def label(self) -> str:
        """How error messages name the model: ``NAME:TYPE``, or the folder and the head it holds."""
        return f"{self.folder} (a {self.name} model)" if self.folder is not None else f"{self.name}:{self.model_type}"

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs on the model's device and in its dtype."""
        return x.to(self.device, dtype=self.dtype, non_blocking=True)


def load(args: argparse.Namespace, device: torch.device | None = None) -> Loaded:
    """``load_model_and_preprocess`` from ``--model/--checkpoint/--tokenizer/--device/--dtype/--option``.

    Weight and tokenizer failures are re-raised (same error type) with the flag that fixes them added.
    """
    from lavislite.api import load_model_and_preprocess
    from lavislite.models.folder import find

    folder = find(args.model)
    name, mtype = parse_model(args.model) if folder is None else ("", "")
    overrides = parse_overrides(getattr(args, "option", []))
    if getattr(args, "tokenizer", None):
        overrides["tokenizer"] = str(args.tokenizer)
    if folder is not None:
        name, mtype = _folder_head(folder, getattr(args, "command", None), overrides)
    device = device or resolve_device(getattr(args, "device", None), what="--device")
    dtype = _DTYPES[getattr(args, "dtype", "fp32") or "fp32"]
    what = str(folder) if folder is not None else f"{name}:{mtype}"
    try:
        if folder is not None:
            model, vis, txt = load_model_and_preprocess(folder, device=device, checkpoint=args.checkpoint, dtype=dtype, **overrides)
        else:
            model, vis, txt = load_model_and_preprocess(name, mtype, device=device, checkpoint=args.checkpoint, dtype=dtype, **overrides)
    except DownloadError as exc:
        raise DownloadError(
            f"cannot get the weights of {what}: {exc} To use a file you already have, pass --checkpoint PATH "
            f"(a .pth/.safetensors file or a transformers BLIP directory)."
        ) from exc
    except CheckpointError as exc:
        where = f"--checkpoint {args.checkpoint}" if args.checkpoint else f"the weights of {what}"
        raise type(exc)(f"{where}: {exc}") from exc
    _check_tokenizer(model, name, mtype)
    return Loaded(model, vis, txt, device, dtype, name, mtype, folder)


# The head a command needs (a method) and the head it builds from a model folder whose own head lacks that
# method, on the same weights: as LAVIS builds its ITM and feature-extractor models from retrieval weights.
COMMAND_HEADS: dict[str, tuple[str, str]] = {
    "match": ("match_probability", "blip_image_text_matching"),
    "features": ("extract_features", "blip_feature_extractor"),
}


def _folder_head(folder: Any, command: str | None, overrides: dict[str, Any]) -> tuple[str, str]:
    """``(arch, model_type)`` the folder loads as; sets ``overrides["arch"]`` when the command needs another head."""
    from lavislite.common.registry import registry
    from lavislite.models.folder import read_config

    cfg = read_config(folder)
    arch = str(overrides.get("arch") or cfg.model.arch)
    need = COMMAND_HEADS.get(command or "")
    if need is not None and "arch" not in overrides:
        registry.import_modules(list(cfg.get("imports") or []))
        method, head = need
        if not hasattr(registry.get_model_class(arch), method):
            logger.info("%s holds a %s model, which has no %s: loading its weights as %s", folder, arch, method, head)
            overrides["arch"] = arch = head
    return arch, str(cfg.model.model_type)


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
