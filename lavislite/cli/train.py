"""``lavislite train`` and ``lavislite evaluate``."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from lavislite.train import add_arguments

    p = add_arguments(sub.add_parser("train", help="train (and validate/test) from a project yaml"))
    p.set_defaults(func=_train)
    e = sub.add_parser("evaluate", help="evaluate a model on the valid/test splits of a project yaml")
    e.add_argument("--cfg-path", required=True, help="project yaml (model:, datasets:, run:)")
    e.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    e.add_argument("--resume", default=None, metavar="PATH|auto", help="evaluate the weights of this checkpoint")
    e.add_argument("--quiet", "-q", action="store_true", help="no progress bars or progress lines")
    e.set_defaults(func=_evaluate, evaluate=True)


def _go(args: argparse.Namespace, evaluate: bool) -> int:
    from lavislite.common import dist
    from lavislite.train import run

    try:
        summary = run(args.cfg_path, args.options, resume=args.resume, evaluate=evaluate)
        if dist.is_main_process():
            print(
                json.dumps(
                    {"run_dir": summary["run_dir"], "best_metric": summary["best_metric"], "metrics": summary["metrics"]}, indent=2, default=str
                )
            )
        dist.barrier()  # no rank tears the group down while a peer still uses it (see lavislite.train.main)
    except BaseException as exc:
        dist.report_failure(exc)
        raise
    finally:
        dist.destroy_distributed()
    return 0


def _train(args: argparse.Namespace) -> int:
    return _go(args, bool(getattr(args, "evaluate", False)))


def _evaluate(args: argparse.Namespace) -> int:
    return _go(args, True)
