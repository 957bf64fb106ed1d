"""``lavislite index IMAGES... --out INDEX``: a persistent, incremental image-search index (see docs/serve.md)."""

from __future__ import annotations

import argparse

DEFAULT_MODEL = "blip_retrieval:coco"


def add_spec_options(p: argparse.ArgumentParser, default: str | None, what: str = "model") -> None:
    """--model/--checkpoint/--tokenizer/--option/--device/--dtype (the index and search commands)."""
    g = p.add_argument_group(what)
    g.add_argument("--model", default=default, metavar="NAME:TYPE|FOLDER",
                   help=f"registered retrieval or feature model, or a model folder (a training run's directory or what "
                        f"`lavislite export` wrote); default {default or 'the one that made the index'}")
    g.add_argument("--checkpoint", default=None, metavar="PATH", help="weights instead of the type's download")
    g.add_argument("--tokenizer", default=None, metavar="DIR", help="tokenizer directory holding vocab.txt")
    g.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model config override, repeatable")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: this rank's GPU if any, else cpu)")
    g.add_argument("--dtype", default="fp32", choices=("auto", "fp32", "bf16", "fp16"), help="compute dtype (default fp32)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build or update a persistent image-search index",
                       description="Encode images once into a faiss index of normalised ITC embeddings. Re-running "
                                   "encodes only new or changed images and drops deleted ones; a killed run resumes. "
                                   "torchrun splits the encoding across processes.")
    p.add_argument("inputs", nargs="+", metavar="IMAGES", help="image folders/files, webdataset .tar shards, or annotation .json files")
    p.add_argument("--out", "-o", required=True, metavar="INDEX", help="index folder (created or updated)")
    p.add_argument("--image-root", default=None, metavar="DIR", help="folder the annotation json's image paths are relative to")
    p.add_argument("--texts", default=None, metavar="FILE", help="texts (one per line) for image->text search, besides annotation captions")
    p.add_argument("--index-type", default="flat", choices=("flat", "ivf", "hnsw"),
                   help="flat: exact inner product (default); ivf / hnsw: approximate, for millions of images")
    p.add_argument("--nlist", type=int, default=None, help="ivf cells (default ~4 sqrt(n))")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--commit-every", type=int, default=1024, help="images per committed segment (a kill loses at most these)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images instead of stopping")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    add_spec_options(p, DEFAULT_MODEL)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from lavislite.common import dist
    from lavislite.common.errors import DataError
    from lavislite.serve.build import build_index
    from lavislite.serve.identity import ModelSpec, load_spec
    from lavislite.serve.sources import discover_entries

    entries, texts = discover_entries(args.inputs, args.image_root)
    if args.texts:
        p = Path(args.texts)
        if not p.is_file():
            raise DataError(f"--texts {p}: no such file (give a file with one text per line)")
        texts = list(dict.fromkeys(texts + [t.strip() for t in p.read_text(encoding="utf-8").splitlines() if t.strip()]))
    dist.init_distributed(None, None)
    try:
        lm = load_spec(ModelSpec.from_args(args.model, args.checkpoint, args.tokenizer, args.option), args.device, args.dtype)
        index, stats = build_index(lm, entries, args.out, texts=texts, kind=args.index_type, nlist=args.nlist,
                                   batch_size=args.batch_size, commit_every=args.commit_every, skip_bad=args.skip_bad,
                                   show_progress=not args.quiet)
    finally:
        dist.destroy_distributed()
    if index is not None and not args.quiet:
        skipped = f", {len(stats.skipped)} unreadable skipped" if stats.skipped else ""
        print(f"lavislite index: {args.out}: {len(index)} images ({stats.encoded} encoded, {stats.kept} unchanged, "
              f"{stats.removed} removed{skipped}), {len(index.texts)} texts, {stats.seconds:.1f}s", file=sys.stderr)
    return 0
