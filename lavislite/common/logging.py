"""Run logging: the ``log.txt`` handler, ``metrics.jsonl`` records and rank-aware progress bars."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")

LOGGER_NAME = "lavislite"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_run_logging(run_dir: Path | None, rank: int = 0, world_size: int = 1) -> logging.Handler | None:
    """Log ``lavislite.*`` to ``<run_dir>/log.txt`` (rank 0 only) and keep other ranks to warnings.

    Returns the file handler so the caller can remove it at the end of the run.
    """
    root = logging.getLogger(LOGGER_NAME)
    root.setLevel(logging.INFO)
    prefix = f"[rank {rank}] " if world_size > 1 else ""
    if not logging.getLogger().handlers and not root.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(prefix + _FORMAT))
        root.addHandler(stream)
    if rank != 0:
        # Other ranks say only what goes wrong; rank 0 tells the story once.
        root.setLevel(logging.WARNING)
        return None
    if run_dir is None:
        return None
    handler = logging.FileHandler(Path(run_dir) / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(handler)
    return handler


def remove_handler(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger(LOGGER_NAME).removeHandler(handler)
        handler.close()


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per line (train logs and eval results)."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path is not None else None

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records logged after optimizer step ``step`` (a resumed run re-logs them identically)."""
        if self.path is None or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if int(rec.get("step", -1)) <= step:
                keep.append(line)
        self.path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and callable(v.item):
        try:
            return v.item()
        except (ValueError, RuntimeError):
            return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """A tqdm bar on rank 0 (``enabled``), the bare iterable elsewhere or when stderr is not a terminal."""
    if not enabled or not sys.stderr.isatty():
        return iter(iterable)
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, leave=False))
