"""``lavislite demo``: the whole library on a synthetic world, offline (see docs/demo.md)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demo: generate a world, pre-train, fine-tune and evaluate every task, zero-shot video",
        description="Generate the synthetic shapes world, pre-train a tiny BLIP (ITC+ITM+LM), fine-tune "
        "captioning, retrieval, VQA and NLVR from it, evaluate each on held-out test data, transfer to "
        "video zero-shot, and print the metrics next to chance. About 10 minutes on an idle 2-core CPU.",
    )
    p.add_argument("which", nargs="?", choices=("capfilt",), default=None,
                   help="capfilt: BLIP's CapFilt ablation instead (pre-train on the noisy web vs the bootstrapped web; docs/capfilt.md)")
    p.add_argument("--quick", action="store_true", help="a small world and a short schedule, same model (about 3 minutes of one CPU core; for tests)")
    p.add_argument("--out", default=None, metavar="DIR", help="run directory (default: output/demo/<UTC time>)")
    p.add_argument("--seed", type=int, default=0, help="world and training seed (default 0)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: 1 with --quick, else the usable cores, at most 8)")
    p.add_argument("--world", default=None, metavar="DIR", help="where to write (or reuse) the shapes world (default: the lavislite cache)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG pictures")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or progress lines (the stage lines and the table stay)")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="overrides given to every stage, e.g. run.device=cpu")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from lavislite.common.errors import ConfigError
    from lavislite.demo.run import run_demo

    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.which == "capfilt":
        from lavislite.demo.capfilt_demo import run_capfilt_demo

        run_capfilt_demo(args.out, quick=args.quick, seed=args.seed, threads=args.threads, world_dir=args.world)
        return 0
    run_demo(args.out, quick=args.quick, seed=args.seed, threads=args.threads, world_dir=args.world,
             extra_options=args.options, plots=not args.no_plots)
    return 0
