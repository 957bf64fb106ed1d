"""Where a command's records go: stdout (JSON lines as they come, or a table at the end) or a resumable
JSONL file (per-rank part files under torchrun, merged at the end; see :mod:`lavislite.inference.rank_split`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

from lavislite.common.errors import ConfigError
from lavislite.inference import rank_split
from lavislite.inference.jsonl import JsonlWriter, dumps

logger = logging.getLogger(__name__)


def format_table(records: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain aligned text table (floats with 4 decimals, lists joined by ' | ')."""
    if not records:
        return "(no results)"
    columns = list(columns or dict.fromkeys(k for r in records for k in r))

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, (list, tuple)):
            return " | ".join(cell(x) for x in v)
        return "" if v is None else str(v)

    rows = [[cell(r.get(c)) for c in columns] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in rows)])


class Output:
    """The sink of a command. ``done`` holds ids a previous run already wrote (file output only)."""

    def __init__(self, args: argparse.Namespace, shard: rank_split.Shard, columns: Sequence[str] | None = None,
                 stream: TextIO | None = None) -> None:
        self.args, self.shard, self.columns = args, shard, columns
        self.stream = stream or sys.stdout
        self.table: list[dict[str, Any]] = []
        self.writer: JsonlWriter | None = None
        self.done: set[str] = set()
        self.output = Path(args.output) if getattr(args, "output", None) else None
        if self.output is None:
            if shard.world > 1:
                raise ConfigError("under torchrun give --output FILE (each rank writes FILE.rank<r>.jsonl, merged at the end)")
            return
        if self.output.is_dir():
            raise ConfigError(f"--output {self.output} is a directory; give a file name such as {self.output / 'results.jsonl'}")
        if getattr(args, "overwrite", False):
            if shard.rank == 0:
                for p in [self.output, *rank_split.existing_parts(self.output)]:
                    p.unlink(missing_ok=True)
            rank_split.barrier()
        self.done = rank_split.done_ids(self.output)
        target = rank_split.part_path(self.output, shard.rank) if shard.world > 1 else self.output
        self.writer = JsonlWriter(target)

    def __call__(self, records: Sequence[dict[str, Any]]) -> None:
        if self.writer is not None:
            self.writer.write(records)
        elif self.args.format == "table":
            self.table.extend(records)
        else:
            for r in records:
                self.stream.write(dumps(r) + "\n")
            self.stream.flush()

    def finish(self, order: Sequence[str] | None = None) -> None:
        """Close the file; merge part files (rank 0, after all ranks are done) unless ``--no-merge``."""
        if self.writer is not None:
            self.writer.close()
            if self.shard.world > 1:
                rank_split.barrier()
            if self.shard.rank == 0 and not getattr(self.args, "no_merge", False):
                if self.shard.world > 1 or rank_split.existing_parts(self.output):
                    rank_split.merge(self.output, order)
        elif self.args.format == "table":
            self.stream.write(format_table(self.table, self.columns) + "\n")
            self.stream.flush()


def summary(command: str, stats: Any, out: Output, *, quiet: bool = False) -> None:
    """One line on stderr: new results, results kept from earlier runs, skipped inputs, speed."""
    if quiet:
        return
    parts = [f"{stats.processed} new"]
    if out.output is not None:
        parts.append(f"{len(out.done)} already in {out.output}")
    if stats.skipped:
        parts.append(f"{len(stats.skipped)} unreadable skipped (first: {stats.skipped[0][0]})")
    rank = f"rank {out.shard.rank}/{out.shard.world} " if out.shard.world > 1 else ""
    print(f"lavislite {command}: {rank}{', '.join(parts)}; {stats.per_second:.2f} items/s", file=sys.stderr, flush=True)
