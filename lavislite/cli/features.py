"""``lavislite features``: image (or text) feature vectors to JSONL or to .safetensors/.npy shards."""

from __future__ import annotations

import argparse

from lavislite.inference.options import add_model_options, add_run_options

DEFAULT_MODEL = "blip_feature_extractor:base"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="extract image or text features (JSONL or .safetensors/.npy shards)",
                       description="Extract features with extract_features. --output FILE.jsonl writes one JSON line per "
                                   "input; any other --output is a directory of shards (--shard-format). Both resume: "
                                   "ids already written are skipped. torchrun splits the inputs across processes.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders or .tar shards; with --mode text, text files (one text per line)")
    p.add_argument("--mode", choices=("image", "text"), default="image", help="image or text features (default image)")
    p.add_argument("--kind", choices=("proj", "cls"), default="proj",
                   help="proj: the L2-normalised ITC embedding of [CLS] (for similarity search; default); cls: the raw [CLS] state")
    p.add_argument("--shard-format", choices=("safetensors", "npy"), default="safetensors", help="shard files (default safetensors)")
    p.add_argument("--shard-size", type=int, default=4096, help="rows per shard file (default 4096)")
    add_model_options(p, DEFAULT_MODEL)
    add_run_options(p, batch_size=32)
    p.set_defaults(func=run)


class _ShardOutput:
    """The :class:`lavislite.inference.output.Output` interface over a :class:`ShardWriter` directory."""

    def __init__(self, args: argparse.Namespace, shard) -> None:
        import shutil
        from pathlib import Path

        from lavislite.inference import rank_split
        from lavislite.inference.feature_shards import ShardWriter, shard_ids

        self.output, self.shard = Path(args.output), shard
        if args.overwrite and shard.rank == 0 and self.output.is_dir():
            shutil.rmtree(self.output)
        rank_split.barrier()
        self.done = shard_ids(self.output)
        self.writer = ShardWriter(self.output, args.shard_format, args.shard_size, prefix=f"rank{shard.rank}")

    def __call__(self, records) -> None:
        self.writer.add([r["id"] for r in records], [r["feature"] for r in records])

    def finish(self, order=None) -> None:
        self.writer.close()


def _make_output(args: argparse.Namespace, shard):
    from lavislite.inference.output import Output

    if args.output and not str(args.output).endswith(".jsonl"):
        return _ShardOutput(args, shard)
    return Output(args, shard, columns=("id", "feature"))


def _check(ld) -> None:
    from lavislite.models.protocols import FeatureExtractor, require

    require(ld.model, [FeatureExtractor], by=f"lavislite features (--model {ld.label})",
            hint="use blip_feature_extractor:base")


def _vectors(out, mode: str, kind: str):
    if mode == "image":
        v = out.image_embeds_proj[:, 0] if kind == "proj" else out.image_embeds[:, 0]
    else:
        v = out.text_embeds_proj[:, 0] if kind == "proj" else out.text_embeds[:, 0]
    return v.float().cpu().numpy()


def _image_fn(args: argparse.Namespace, ld):
    def fn(batch: dict) -> list[dict]:
        vecs = _vectors(ld.model.extract_features({"image": ld.to_model(batch["image"])}, mode="image"), "image", args.kind)
        return [{"id": i, "feature": v} for i, v in zip(batch["id"], vecs)]

    return fn


def run(args: argparse.Namespace) -> int:
    if args.mode == "image":
        from lavislite.inference.pipeline import run_image_command

        return run_image_command(args, "features", lambda ld: _image_fn(args, ld), columns=("id", "feature"), check=_check,
                                 make_output=_make_output)
    return _run_text(args)


def _read_texts(paths) -> list[tuple[str, str]]:
    from pathlib import Path

    from lavislite.common.errors import DataError

    out = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise DataError(f"--mode text: no such text file: {p} (give files with one text per line)")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                out.append((f"{p}:{n}", line.strip()))
    if not out:
        raise DataError(f"--mode text: no texts in {', '.join(map(str, paths))}")
    return out


def _run_text(args: argparse.Namespace) -> int:
    import time

    from lavislite.common.utils import resolve_device
    from lavislite.inference import rank_split
    from lavislite.inference.batch_loop import RunStats
    from lavislite.inference.loading import load
    from lavislite.inference.output import summary

    device = resolve_device(args.device, what="--device")
    shard = rank_split.init(device)
    try:
        ld = load(args, device)
        _check(ld)
        out = _make_output(args, shard)
        texts = _read_texts(args.inputs)
        todo = [t for t in shard.take(texts) if t[0] not in out.done]
        clean = ld.txt_processors["eval"]
        stats, start = RunStats(), time.monotonic()
        for s in range(0, len(todo), args.batch_size):
            chunk = todo[s : s + args.batch_size]
            feats = ld.model.extract_features({"text_input": [clean(t) for _, t in chunk]}, mode="text")
            out([{"id": i, "feature": v} for (i, _), v in zip(chunk, _vectors(feats, "text", args.kind))])
            stats.processed += len(chunk)
        stats.seconds = time.monotonic() - start
        out.finish([i for i, _ in texts])
        summary("features", stats, out, quiet=args.quiet)
        return 0
    finally:
        rank_split.finish()
