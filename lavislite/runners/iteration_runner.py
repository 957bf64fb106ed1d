"""The iteration-based runner: ``run.max_iters`` iterations, validated and checkpointed every
``run.iters_per_inner_epoch`` ("inner epochs"). Batches stream across passes over the train data, so
an inner epoch need not align with a pass, and iterable (webdataset) datasets without a length work.
Everything else is ``EpochRunner``.
"""

from __future__ import annotations

from typing import Any

from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry
from lavislite.runners.epoch_runner import EpochRunner


@registry.register_runner("runner_iter")
class IterationRunner(EpochRunner):
    def epoch_lengths(self, train_loader: Any) -> list[int]:
        total = self.run_cfg.get("max_iters")
        per = self.run_cfg.get("iters_per_inner_epoch")
        if not total or int(total) < 1:
            raise ConfigError("run.runner=runner_iter needs run.max_iters (total training iterations), e.g. --options run.max_iters=10000")
        total = int(total)
        per = int(per) if per else total
        if per < 1:
            raise ConfigError(f"run.iters_per_inner_epoch must be >= 1, got {per}")
        full, rest = divmod(total, per)
        return [per] * full + ([rest] if rest else [])
