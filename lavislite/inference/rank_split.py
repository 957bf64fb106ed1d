"""torchrun sharding for batch inference.

* ``torchrun --nproc_per_node=N -m lavislite.cli caption DIR --output out.jsonl``: rank ``r`` of ``N``
  takes items ``r, r+N, r+2N, ...`` of the full (sorted) input list and appends its results to its own
  part file ``out.rank<r>.jsonl`` (no two processes ever append to one file).
* Done ids are read from ``out.jsonl`` and every ``out.rank*.jsonl`` present, so a run resumes whatever
  the previous run's number of processes was.
* At the end all ranks meet at a barrier and rank 0 merges ``out.jsonl`` and the part files into
  ``out.jsonl`` (input order, each id once; written to a temp file and renamed into place), then deletes
  the parts. ``--no-merge`` keeps the per-rank files instead.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar

from lavislite.inference.jsonl import dumps, read_ids, read_records

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    def take(self, items: Sequence[T]) -> list[T]:
        """This rank's share: every ``world``-th item starting at ``rank``."""
        return list(items[self.rank :: self.world])


def init(device: object = None) -> Shard:
    """Join torchrun's process group when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on CUDA)."""
    from lavislite.common import dist

    dist.init_distributed(None, device)
    return Shard(dist.get_rank(), dist.get_world_size())


def finish() -> None:
    from lavislite.common import dist

    dist.destroy_distributed()


def barrier() -> None:
    from lavislite.common import dist

    dist.barrier()


def part_path(output: str | os.PathLike, rank: int) -> Path:
    """``out.jsonl`` -> ``out.rank<r>.jsonl``."""
    p = Path(output)
    return p.with_name(f"{p.stem}.rank{rank}{p.suffix}")


def existing_parts(output: str | os.PathLike) -> list[Path]:
    p = Path(output)
    pattern = re.compile(re.escape(p.stem) + r"\.rank(\d+)" + re.escape(p.suffix) + "$")
    found = [Path(f) for f in glob.glob(str(p.with_name(f"{glob.escape(p.stem)}.rank*{glob.escape(p.suffix)}")))]
    return sorted((f for f in found if pattern.match(f.name)), key=lambda f: int(pattern.match(f.name).group(1)))


def done_ids(output: str | os.PathLike, id_key: str = "id") -> set[str]:
    """Ids already in ``output`` or any of its part files."""
    ids = read_ids(output, id_key)
    for part in existing_parts(output):
        ids |= read_ids(part, id_key)
    return ids


def merge(output: str | os.PathLike, order: Sequence[str] | None = None, id_key: str = "id") -> int:
    """Merge ``output`` and its part files into ``output`` (each id once; in ``order`` where given,
    unknown ids after in file order); delete the parts. Returns the number of records."""
    from lavislite.common.utils import atomic_write

    output = Path(output)
    parts = existing_parts(output)
    records: dict[str, dict] = {}
    for source in [output, *parts]:
        for rec in read_records(source):
            records.setdefault(str(rec.get(id_key)), rec)
    if order is not None:
        rank = {k: i for i, k in enumerate(order)}
        keys = sorted(records, key=lambda k: (rank.get(k, len(rank)),))
    else:
        keys = list(records)
    with atomic_write(output) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for k in keys:
                f.write(dumps(records[k]) + "\n")
    for part in parts:
        part.unlink(missing_ok=True)
    if parts:
        logger.info("merged %d part files into %s (%d records)", len(parts), output, len(keys))
    return len(keys)
