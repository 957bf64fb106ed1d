"""The shared body of the per-image commands (caption, vqa, match, features): join torchrun, load the
model, discover inputs, take this rank's share minus what is already done, run batches, finish output."""

from __future__ import annotations

import argparse
import logging
from typing import Any, Callable, Sequence

from lavislite.common.utils import resolve_device
from lavislite.inference import rank_split
from lavislite.inference.batch_loop import BatchFn, RunStats, run_batches
from lavislite.inference.data import ItemsDataset, ShardImageDataset
from lavislite.inference.inputs import discover, expand_shards, split_inputs
from lavislite.inference.loading import Loaded, load
from lavislite.inference.output import Output, summary

logger = logging.getLogger(__name__)


def image_datasets(inputs: Sequence[str], process: Callable, shard: rank_split.Shard, done: set[str]) -> tuple[list[Any], list[str] | None, int]:
    """Datasets for files/folders and webdataset shards in ``inputs``; the input order of the file ids
    (for merging); and how many file items this rank still has to do."""
    files, shard_specs = split_inputs(inputs)
    datasets: list[Any] = []
    order: list[str] | None = None
    todo_n = 0
    if files:
        items = discover(files)
        order = [i.id for i in items]
        todo = [i for i in shard.take(items) if i.id not in done]
        todo_n = len(todo)
        if todo:
            datasets.append(ItemsDataset(todo, process))
    if shard_specs:
        datasets.append(ShardImageDataset(expand_shards(shard_specs), process, done=done, rank=shard.rank, world=shard.world))
    return datasets, order, todo_n


def run_image_command(
    args: argparse.Namespace,
    command: str,
    make_fn: Callable[[Loaded], BatchFn],
    columns: Sequence[str],
    check: Callable[[Loaded], None] | None = None,
    make_output: Callable[[argparse.Namespace, rank_split.Shard], Any] | None = None,
) -> int:
    """Run ``make_fn(loaded)`` over the images of ``args.inputs`` with ``args`` run options; 0 on success."""
    device = resolve_device(getattr(args, "device", None), what="--device")
    shard = rank_split.init(device)
    try:
        loaded = load(args, device)
        if check is not None:
            check(loaded)
        out = make_output(args, shard) if make_output else Output(args, shard, columns)
        datasets, order, todo_n = image_datasets(args.inputs, loaded.vis_processors["eval"], shard, out.done)
        fn = make_fn(loaded)
        total = RunStats()
        for ds in datasets:
            stats = run_batches(ds, fn, out, batch_size=args.batch_size, num_workers=args.num_workers, skip_bad=args.skip_bad,
                                desc=command, total=todo_n if isinstance(ds, ItemsDataset) else None, show_progress=not args.quiet)
            total.processed += stats.processed
            total.skipped += stats.skipped
            total.seconds += stats.seconds
        out.finish(order)
        summary(command, total, out, quiet=args.quiet)
        return 0
    except BaseException as exc:
        if shard.world > 1:
            from lavislite.common import dist

            dist.report_failure(exc)
        raise
    finally:
        rank_split.finish()
