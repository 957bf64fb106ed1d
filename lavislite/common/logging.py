"""Run logging: the ``log.txt`` handler, ``metrics.jsonl`` records and rank-aware progress bars."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass
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


# -- progress ---------------------------------------------------------------------------------------
PROGRESS_LOGGER = "lavislite.progress"


@dataclass
class _ProgressSettings:
    quiet: bool = False
    every_s: float = 15.0  # a progress line this often when stderr is not a terminal
    last_line: float = float("-inf")  # shared by every bar, so short loops in a row still report


_settings = _ProgressSettings()


def configure_progress(*, quiet: bool | None = None, every_s: float | None = None) -> tuple[bool, float]:
    """``quiet``: no bars and no progress lines anywhere (``--quiet``); ``every_s``: the interval of the
    progress lines logged (logger ``lavislite.progress``, INFO) when stderr is not a terminal.

    Returns the previous ``(quiet, every_s)``, for a caller that restores them."""
    before = (_settings.quiet, _settings.every_s)
    if quiet is not None:
        _settings.quiet = bool(quiet)
    if every_s is not None:
        _settings.every_s = float(every_s)
    return before


def progress_quiet() -> bool:
    return _settings.quiet


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Progress over ``iterable``: a tqdm bar (rate, ETA) on a terminal; elsewhere a log line at most every
    ``every_s`` seconds (see :func:`configure_progress`); nothing when quiet or not ``enabled`` (rank > 0)."""
    if not enabled or _settings.quiet:
        return iter(iterable)
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:  # a generator, or a DataLoader over an iterable dataset
            total = None
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return iter(tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, leave=False))
    return _progress_lines(iterable, desc, total)


def _progress_lines(iterable: Iterable[T], desc: str, total: int | None) -> Iterator[T]:
    start = time.monotonic()
    for n, item in enumerate(iterable, start=1):
        yield item
        progress_tick(desc, n, total, time.monotonic() - start)


def progress_tick(desc: str, n: int, total: int | None, elapsed: float) -> None:
    """Log a progress line (logger ``lavislite.progress``) if none was logged in the last ``every_s`` s."""
    now = time.monotonic()
    if now - _settings.last_line >= _settings.every_s:
        _settings.last_line = now
        logging.getLogger(PROGRESS_LOGGER).info("%s", progress_line(desc, n, total, elapsed))


def progress_line(desc: str, n: int, total: int | None, elapsed: float) -> str:
    """``desc: 12/40 (30%) 2.10 it/s, 0:06 elapsed, ETA 0:13`` (no total: count, rate and time only)."""
    rate = n / elapsed if elapsed > 0 else 0.0
    head = f"{desc}: {n}/{total} ({100 * n / total:.0f}%)" if total else f"{desc}: {n}"
    tail = f", ETA {_clock((total - n) / rate)}" if total and rate > 0 else ""
    return f"{head} {rate:.2f} it/s, {_clock(elapsed)} elapsed{tail}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"
