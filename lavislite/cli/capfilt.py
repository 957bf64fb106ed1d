"""``lavislite capfilt --cfg-path X.yaml``: bootstrap a web corpus with a captioner and a filter (torchrun-able, resumable)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "capfilt", help="CapFilt: caption web images, filter noisy texts, write pre-training shards",
        description="BLIP's dataset bootstrapping. Reads webdataset shards or a BLIP json list, writes synthetic captions "
        "with a blip_caption model, keeps the web and synthetic texts an ITM filter accepts, and writes webdataset shards, "
        "BLIP json lists, per-shard stats, summary.json and scores.png. Restarting the same command skips finished shards; "
        "under torchrun the shards are split across processes (see docs/capfilt.md).",
    )
    p.add_argument("--cfg-path", default=None, metavar="YAML", help="capfilt yaml (see projects/capfilt/bootstrap.yaml)")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides, e.g. output.dir=out input.shards=[web/{000..009}.tar] generation.method=beam")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from lavislite.capfilt import load_config
    from lavislite.capfilt.pipeline import run
    from lavislite.capfilt.stats import format_summary

    options = list(args.options) + (["run.progress=false"] if args.quiet else [])
    result = run(load_config(args.cfg_path, options))
    if not args.quiet:
        print(f"capfilt rank {result.rank}/{result.world}: {len(result.processed)} shard(s) processed, "
              f"{len(result.skipped)} already complete ({result.images_per_second:.1f} images/s)", file=sys.stderr)
        if result.summary is not None:
            print(format_summary(result.summary), file=sys.stderr)
            print(f"outputs in {result.output_dir}", file=sys.stderr)
    return 0
