"""``lavislite export --model NAME:TYPE [--checkpoint ...] --out DIR``: write a model folder that loads by itself."""

from __future__ import annotations

import argparse

from lavislite.inference.options import add_model_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a model folder (weights, config, processors, tokenizer) for any loadable model",
                       description="Load a model as every command does (--model, --checkpoint, --tokenizer, --option) and "
                                   "write it as a model folder: afterwards `--model DIR` (CLI) or load_model(DIR) (Python) "
                                   "loads it with no other option. See docs/inference.md.")
    add_model_options(p, "blip_caption:base_coco")
    p.add_argument("--out", required=True, metavar="DIR", help="the model folder to write (new or empty, or a model folder to replace)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from lavislite.inference.loading import load
    from lavislite.models import folder

    args.dtype = args.dtype or "fp32"
    loaded = load(args, torch.device(args.device or "cpu"))
    out = folder.save(loaded.model, args.out)
    print(f"wrote {out}: load it with --model {out} or load_model({str(out)!r})")
    return 0
