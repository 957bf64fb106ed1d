"""The batch loop: a DataLoader over an inference dataset, a model function per batch, a sink for records."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch.utils.data import DataLoader, Dataset

from lavislite.common.errors import DataError
from lavislite.common.logging import progress_quiet, progress_tick
from lavislite.inference.data import collate

logger = logging.getLogger(__name__)

BatchFn = Callable[[dict[str, Any]], Sequence[dict[str, Any]]]


@dataclass
class RunStats:
    processed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def make_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    if int(batch_size) < 1:
        raise DataError(f"--batch-size {batch_size}: use an integer >= 1")
    if int(num_workers) < 0:
        raise DataError(f"--num-workers {num_workers}: use an integer >= 0")
    return DataLoader(dataset, batch_size=int(batch_size), num_workers=int(num_workers), shuffle=False,
                      collate_fn=collate, persistent_workers=False)


def run_batches(
    dataset: Dataset,
    fn: BatchFn,
    sink: Callable[[Sequence[dict[str, Any]]], None],
    *,
    batch_size: int = 8,
    num_workers: int = 0,
    skip_bad: bool = False,
    desc: str = "inference",
    total: int | None = None,
    show_progress: bool = True,
) -> RunStats:
    """Run ``fn`` on every batch and hand its records to ``sink`` (after each batch, so a crash loses at
    most the batch in flight). An unreadable input raises its :class:`DataError`, or with ``skip_bad`` is
    logged, counted in ``RunStats.skipped`` and left out."""
    stats = RunStats()
    loader = make_loader(dataset, batch_size, num_workers)
    start = time.monotonic()
    show_progress = show_progress and not progress_quiet()
    bar = None
    if show_progress and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, leave=False)
    try:
        for batch in loader:
            for item_id, message in batch["bad"]:
                if not skip_bad:
                    raise DataError(f"{message} (pass --skip-bad to skip unreadable inputs and go on)")
                logger.warning("skipping %s: %s", item_id, message)
                stats.skipped.append((item_id, message))
            if batch["id"]:
                sink(fn(batch))
                stats.processed += len(batch["id"])
            if bar is not None:
                bar.update(len(batch["id"]) + len(batch["bad"]))
            elif show_progress:
                progress_tick(desc, stats.processed + len(stats.skipped), total, time.monotonic() - start)
    finally:
        if bar is not None:
            bar.close()
    stats.seconds = time.monotonic() - start
    return stats
