"""Train or evaluate from a project yaml: ``python -m lavislite.train --cfg-path X.yaml``.

Works the same under ``torchrun --nproc_per_node=N -m lavislite.train --cfg-path X.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Sequence


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--cfg-path", required=True, help="project yaml (model:, datasets:, run:)")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides, e.g. run.max_epoch=3 run.init_lr=1e-5")
    p.add_argument("--resume", default=None, metavar="PATH|auto", help="continue from a checkpoint_latest.pth, or auto: the newest of this run name")
    p.add_argument("--evaluate", action="store_true", help="evaluate only (run.evaluate=true)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or progress lines")
    return p


def run(cfg_path: str, options: Sequence[str] = (), *, resume: str | None = None, evaluate: bool = False) -> dict[str, Any]:
    """Build the config, task, model, datasets and runner; train or evaluate; return the summary."""
    from lavislite.common.config import build_run_config
    from lavislite.common.registry import registry
    from lavislite.processors.sizes import check_run
    from lavislite.runners.epoch_runner import set_seed
    from lavislite.tasks import setup_task

    options = list(options)
    if resume:
        options.append(f"run.resume_ckpt_path={resume}")
    if evaluate:
        options.append("run.evaluate=true")
    cfg = build_run_config(cfg_path, options)
    check_run(cfg)  # the datasets' image processors produce the model's image size
    set_seed(int(cfg.run.seed))  # same seed on every rank: identical initial weights
    task = setup_task(cfg)
    model = task.build_model(cfg)
    datasets = task.build_datasets(cfg)
    runner = registry.get_runner_class(cfg.run.runner)(cfg, task, model, datasets)
    return runner.train()


def main(argv: Sequence[str] | None = None) -> int:
    from lavislite.common import dist
    from lavislite.common.errors import LavisliteError

    args = add_arguments(argparse.ArgumentParser(prog="python -m lavislite.train", description=__doc__)).parse_args(argv)
    from lavislite.common.logging import configure_progress

    configure_progress(quiet=args.quiet)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(args.cfg_path, args.options, resume=args.resume, evaluate=args.evaluate)
        # Every rank reaches this point before any tears the group down: rank 0 hosts the store, and a
        # peer still talking to it when it goes away aborts in gloo's C++ threads (SIGABRT at exit).
        dist.barrier()
    except LavisliteError as exc:
        dist.report_failure(exc)
        return 2
    except BaseException as exc:
        dist.report_failure(exc)
        raise
    finally:
        dist.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
