"""``lavislite caption IMAGE|FOLDER|SHARD.tar ...``: captions as JSON lines or a table (resumable, torchrun-able)."""

from __future__ import annotations

import argparse

from lavislite.inference.options import add_model_options, add_run_options

DEFAULT_MODEL = "blip_caption:base_coco"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caption", help="caption images (files, folders, webdataset shards)",
                       description="Caption images. Inputs are image files, folders (searched recursively) or webdataset "
                                   ".tar shards (brace patterns allowed). With --output the run is resumable and can be "
                                   "split across processes with torchrun (see docs/inference.md).")
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, folders or .tar shards")
    g = p.add_argument_group("decoding")
    g.add_argument("--beams", type=int, default=3, help="beam size (default 3)")
    g.add_argument("--sample", action="store_true", help="nucleus sampling instead of beam search")
    g.add_argument("--top-p", type=float, default=0.9, help="nucleus mass with --sample (default 0.9)")
    g.add_argument("--max-length", type=int, default=30, help="max tokens, prompt included (default 30)")
    g.add_argument("--min-length", type=int, default=10, help="min tokens, prompt included (default 10)")
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="beam search repetition penalty (default 1.0)")
    g.add_argument("--num-captions", type=int, default=1, help="captions per image (<= --beams without --sample)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    add_model_options(p, DEFAULT_MODEL)
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lavislite.inference.pipeline import run_image_command

    return run_image_command(args, "caption", lambda ld: _caption_fn(args, ld), columns=("id", "caption"), check=_check)


def _check(ld) -> None:
    from lavislite.models.protocols import Captioner, require

    require(ld.model, [Captioner], by=f"lavislite caption (--model {ld.label})",
            hint="this model cannot caption; use a blip_caption type, e.g. blip_caption:base_coco")


def _caption_fn(args: argparse.Namespace, ld):
    import torch

    generator = torch.Generator(device=ld.device).manual_seed(args.seed) if args.sample else None
    n = int(args.num_captions)

    def fn(batch: dict) -> list[dict]:
        caps = ld.model.generate(
            {"image": ld.to_model(batch["image"])}, use_nucleus_sampling=args.sample, num_beams=args.beams,
            max_length=args.max_length, min_length=args.min_length, top_p=args.top_p,
            repetition_penalty=args.repetition_penalty, num_captions=n, generator=generator,
        )
        out = []
        for i, item_id in enumerate(batch["id"]):
            mine = caps[i * n : (i + 1) * n]
            out.append({"id": item_id, "caption": mine[0]} if n == 1 else {"id": item_id, "caption": mine})
        return out

    return fn
