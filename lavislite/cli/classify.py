"""``lavislite classify IMAGE... --labels "a dog,a cat"``: zero-shot classification over your labels (ITC, optional ITM)."""

from __future__ import annotations

import argparse

from lavislite.cli.index import add_spec_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="zero-shot classification of images over labels you give",
                       description="Score each image against every label by ITC cosine (probabilities: softmax at the "
                                   "model's ITC temperature); --rerank adds the ITM logit to each score, as BLIP's retrieval.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--labels", required=True, help="comma-separated labels, or @FILE with one label per line")
    p.add_argument("--template", default="{}", help="text around each label, e.g. 'a picture of {}' (default: the label)")
    p.add_argument("--rerank", action="store_true", help="add ITM scores (slower, usually sharper)")
    p.add_argument("--top", type=int, default=3, help="labels printed per image (default 3)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    add_spec_options(p, "blip_image_text_matching:base")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lavislite.common.errors import DataError
    from lavislite.inference.inputs import discover
    from lavislite.serve.identity import ModelSpec, load_spec
    from lavislite.serve.search import classify
    from lavislite.serve.sources import ImageReader

    if args.labels.startswith("@"):
        path = Path(args.labels[1:])
        if not path.is_file():
            raise DataError(f"--labels {args.labels}: no such file")
        labels = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    else:
        labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    lm = load_spec(ModelSpec.from_args(args.model, args.checkpoint, args.tokenizer, args.option), args.device, args.dtype)
    items = discover(args.inputs)
    read = ImageReader()
    for s in range(0, len(items), args.batch_size):
        chunk = items[s : s + args.batch_size]
        for item, ranked in zip(chunk, classify(lm, [read(i.path) for i in chunk], labels, rerank=args.rerank, template=args.template)):
            print(json.dumps({"id": item.id, "labels": ranked[: args.top]}, ensure_ascii=False))
    return 0
