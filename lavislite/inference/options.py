"""Command-line options shared by the inference commands (argparse only: cheap to import)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lavislite.common.errors import ConfigError

DTYPES = ("fp32", "bf16", "fp16")


def add_model_options(p: argparse.ArgumentParser, default_model: str) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=default_model, metavar="NAME:TYPE|FOLDER",
                   help=f"registered model and type (default {default_model}; `lavislite models` lists them), or a model "
                        "folder: a training run's directory or what `lavislite export` wrote")
    g.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="weights to load instead of the type's download: .pth/.safetensors file, transformers BLIP directory or URL")
    g.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="tokenizer directory holding vocab.txt (default: the type's, e.g. bert-base-uncased)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: this rank's GPU if there is one, else cpu)")
    g.add_argument("--dtype", default="fp32", choices=DTYPES, help="weights and inputs dtype (default fp32)")
    g.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override, repeatable (e.g. --option image_size=224, --option max_txt_len=30)")


def add_run_options(p: argparse.ArgumentParser, *, resumable: bool = True, batch_size: int = 8) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"inputs per model call (default {batch_size})")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes for reading inputs (default 0)")
    g.add_argument("--format", default="jsonl", choices=("jsonl", "table"), help="stdout format (default jsonl)")
    g.add_argument("--output", "-o", default=None, metavar="FILE",
                   help="write JSON lines here" + (" (resumable: a re-run skips ids already in it)" if resumable else ""))
    if resumable:
        g.add_argument("--overwrite", action="store_true", help="start --output afresh instead of resuming")
        g.add_argument("--no-merge", action="store_true",
                       help="under torchrun keep one FILE.rank<r>.jsonl per rank instead of merging into FILE")
    g.add_argument("--skip-bad", action="store_true", help="skip (and count) unreadable inputs instead of stopping")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")


def parse_model(spec: str) -> tuple[str, str]:
    """``(name, type)`` of a ``--model NAME:TYPE`` (a model folder is recognised before this is called)."""
    name, sep, mtype = str(spec).partition(":")
    if not sep or not name or not mtype:
        if Path(spec).expanduser().exists() or "/" in str(spec):
            raise ConfigError(f"--model {spec}: not a model folder (no lavislite_model.yaml in it or in its model/); give a "
                              "folder written by a training run or `lavislite export`, or NAME:TYPE")
        raise ConfigError(f"--model {spec!r}: write NAME:TYPE, e.g. blip_caption:base_coco (`lavislite models` lists them), "
                          "or give a model folder")
    return name, mtype


def parse_overrides(options: list[str]) -> dict[str, Any]:
    """``--option key=value`` entries -> keyword overrides (values parsed as yaml: 224 -> int, true -> bool)."""
    import yaml

    out: dict[str, Any] = {}
    for opt in options or []:
        key, sep, raw = opt.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--option {opt!r} is not key=value (example: --option image_size=224)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--option {key}: cannot parse the value {raw!r}: {exc}") from exc
        # a dotted key is a path inside the model section unless it names its section
        if "." in key and not key.startswith(("model.", "preprocess.")):
            key = "model." + key
        out[key] = value
    return out

