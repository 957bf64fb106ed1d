"""``lavislite search INDEX "query"``: text->image (ITC then ITM re-ranking), image->image, image->text."""

from __future__ import annotations

import argparse

from lavislite.cli.index import add_spec_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search a lavislite index by text or by image",
                       description="Text queries rank the index's images: ITC top candidates from faiss, the best "
                                   "--rerank-k re-scored by ITM (score = ITM logit + cosine, as BLIP). --image ranks "
                                   "images by cosine (or, with --to-text, the index's texts).")
    p.add_argument("index", metavar="INDEX", help="index folder made by lavislite index")
    p.add_argument("query", nargs="*", help="text queries")
    p.add_argument("--image", action="append", default=[], metavar="FILE", help="a query image (image->image), repeatable")
    p.add_argument("--to-text", action="store_true", help="with --image: rank the index's texts (image->text)")
    p.add_argument("-k", "--top-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--rerank-k", type=int, default=None, help="candidates re-scored by ITM (default -k; 0 = cosine only)")
    p.add_argument("--format", default="jsonl", choices=("jsonl", "table"), help="stdout format (default jsonl)")
    add_spec_options(p, None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from lavislite.common.errors import ConfigError
    from lavislite.serve.identity import ModelSpec
    from lavislite.serve.search import Searcher
    from lavislite.serve.sources import ImageReader

    if bool(args.query) == bool(args.image):
        raise ConfigError('give text queries (lavislite search INDEX "a dog") or --image FILE, not both and not neither')
    if args.to_text and not args.image:
        raise ConfigError("--to-text ranks texts for a query image: add --image FILE")
    spec = ModelSpec.from_args(args.model, args.checkpoint, args.tokenizer, args.option) if args.model else None
    searcher = Searcher.open(args.index, spec, device=args.device, dtype=args.dtype)
    if args.query:
        names, results = args.query, searcher.text_to_image(args.query, args.top_k, args.rerank_k)
    else:
        read = ImageReader()
        pils = [read(p) for p in args.image]
        names = args.image
        results = (searcher.image_to_text(pils, args.top_k, args.rerank_k) if args.to_text
                   else searcher.image_to_image(pils, args.top_k))
    for name, hits in zip(names, results):
        for h in hits:
            rec = {"query": name, **{k: v for k, v in h.items() if k != "row"}}
            if args.format == "jsonl":
                print(json.dumps(rec, ensure_ascii=False))
            else:
                itm = f"{rec['itm']:8.3f}" if "itm" in rec else " " * 8
                print(f"{rec['rank']:3d}  {rec['score']:8.4f}  itc {rec['itc']:7.4f}  itm {itm}  {rec.get('id', rec.get('text'))}   [{name}]")
    return 0
