"""``lavislite retrieve`` (text -> image) and ``lavislite video-retrieve`` (text -> video) over files/folders."""

from __future__ import annotations

import argparse

from lavislite.inference.options import add_model_options, add_run_options

DEFAULT_MODEL = "blip_retrieval:coco"


def _add(sub: argparse._SubParsersAction, name: str, what: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=f"find the {what}s that best match a text query",
                       description=f"Rank {what} files by a text query: ITC cosine over the gallery, then the best "
                                   "--rerank-k re-scored by the ITM head (score = itm logit + cosine, as BLIP).")
    p.add_argument(f"--{what}s", nargs="+", required=True, metavar=what.upper(), help=f"{what} files or folders (the gallery)")
    p.add_argument("--query", action="append", default=[], help="a text query, repeatable")
    p.add_argument("--queries", default=None, metavar="FILE", help="more queries, one per line")
    p.add_argument("--top-k", type=int, default=5, help="results per query (default 5)")
    p.add_argument("--rerank-k", type=int, default=None,
                   help="candidates re-scored by ITM per query (default: --top-k; 0 = cosine only)")
    add_model_options(p, DEFAULT_MODEL)
    add_run_options(p, resumable=False)
    return p


def register(sub: argparse._SubParsersAction) -> None:
    _add(sub, "retrieve", "image").set_defaults(func=run_images)
    p = _add(sub, "video-retrieve", "video")
    p.add_argument("--num-frames", type=int, default=8, help="frames sampled uniformly per video (default 8, BLIP's)")
    p.add_argument("--frames-per-forward", type=int, default=64, help="frames through the ViT at once (default 64)")
    p.set_defaults(func=run_videos)


def run_images(args: argparse.Namespace) -> int:
    return _run(args, video=False)


def run_videos(args: argparse.Namespace) -> int:
    return _run(args, video=True)


def _queries(args: argparse.Namespace) -> list[str]:
    from pathlib import Path

    from lavislite.common.errors import ConfigError, DataError

    queries = list(args.query)
    if args.queries:
        p = Path(args.queries)
        if not p.is_file():
            raise DataError(f"--queries {p}: no such file")
        queries += [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not queries:
        raise ConfigError('give at least one query: --query "a dog on a beach" (repeatable) or --queries FILE')
    return queries


def _run(args: argparse.Namespace, video: bool) -> int:
    import sys

    from lavislite.common import dist
    from lavislite.common.errors import ConfigError
    from lavislite.inference import rank_split
    from lavislite.inference.inputs import IMAGE_EXTS, VIDEO_EXTS, discover
    from lavislite.inference.loading import load
    from lavislite.inference.output import Output
    from lavislite.inference.search import gallery_embeddings, search
    from lavislite.models.protocols import RetrievalModel, require

    if dist.launched_distributed():
        raise ConfigError("retrieve runs in one process; launch it without torchrun")
    queries = _queries(args)
    ld = load(args)
    require(ld.model, [RetrievalModel], by=f"lavislite {args.command} (--model {args.model})",
            hint="use blip_retrieval:coco, blip_retrieval:flickr or blip_image_text_matching:base")
    if video:
        from lavislite.processors.video_processors import BlipVideoEvalProcessor
        from lavislite.tasks.retrieval import encode_frames

        size = int(getattr(ld.vis_processors["eval"], "image_size", 384))
        load_item = BlipVideoEvalProcessor(num_frames=args.num_frames, image_size=size)
        encode = lambda x: encode_frames(ld.model, ld.to_model(x), args.frames_per_forward)  # noqa: E731
        items, key = discover(args.videos, VIDEO_EXTS, what="video"), "video"
    else:
        load_item = ld.vis_processors["eval"]
        encode = lambda x: ld.model.encode_image(ld.to_model(x))  # noqa: E731
        items, key = discover(args.images, IMAGE_EXTS), "image"
    text = ld.txt_processors["eval"]
    import torch

    with torch.inference_mode():
        kept, embeds, stats = gallery_embeddings(items, load_item, encode, key=key, batch_size=args.batch_size,
                                                 num_workers=args.num_workers, skip_bad=args.skip_bad, quiet=args.quiet)
        rerank = args.top_k if args.rerank_k is None else args.rerank_k
        records = search(ld.model, [text(q) for q in queries], kept, embeds, load_item, encode, top_k=args.top_k,
                         rerank_k=rerank, batch_size=args.batch_size, names=queries)
    if args.output:
        args.overwrite = True  # a search result is not resumable: each run replaces the file
    out = Output(args, rank_split.Shard(), columns=("query", "rank", "id", "score", "itc", "itm"))
    out(records)
    out.finish()
    if not args.quiet:
        skipped = f", {len(stats.skipped)} unreadable skipped" if stats.skipped else ""
        print(f"lavislite {args.command}: {len(kept)} {key}s searched for {len(queries)} queries{skipped}", file=sys.stderr)
    return 0
