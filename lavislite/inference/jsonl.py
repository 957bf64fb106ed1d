"""A resumable, crash-safe JSONL output.

* Every record is one line ``json.dumps(record) + "\\n"``; a batch of lines goes to the file in one
  ``os.write`` on an ``O_APPEND`` descriptor followed by ``fsync``, so a record is either wholly in the
  file or not at all once the call returns.
* The only damage a crash can leave is a last line without its newline (a machine dying inside the
  write). :func:`read_records` ignores such a tail, and opening the file for appending cuts it off
  before anything is added, so the file never holds a broken line in the middle.
* ``done_ids`` are the ids already in the file: a re-run skips them.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from lavislite.common.errors import DataError, OutputError

logger = logging.getLogger(__name__)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "tolist"):  # tensors and numpy values
        return _jsonable(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def dumps(record: dict[str, Any]) -> str:
    """One JSON line (no newline); tensors and numpy arrays become lists."""
    return json.dumps(_jsonable(record), ensure_ascii=False)


def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The complete records of a JSONL file (a last line cut by a crash is left out)."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                logger.warning("%s: ignoring an incomplete last line (%d bytes) left by an interrupted run", path, len(raw))
                return
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {lineno}: not valid JSON ({exc}); the file was edited or is not a lavislite output. "
                                "Fix or remove that line, or pass --overwrite to start again.") from exc
            if not isinstance(rec, dict):
                raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(rec).__name__}")
            yield rec


def read_ids(path: str | os.PathLike, id_key: str = "id") -> set[str]:
    """The ids of the complete records in ``path`` (empty when it does not exist)."""
    return {str(r[id_key]) for r in read_records(path) if id_key in r}


def _cut_incomplete_tail(path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb+") as f:
        # find the last newline; everything after it is a partial record
        pos, chunk = size, 1 << 16
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        else:
            keep = 0
        if keep < size:
            logger.warning("%s: removing an incomplete last line (%d bytes) left by an interrupted run", path, size - keep)
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())


class JsonlWriter:
    """Append records to ``path``; ``overwrite=True`` starts the file afresh instead of resuming."""

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False, id_key: str = "id", fsync: bool = True) -> None:
        self.path = Path(path)
        self.id_key = id_key
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            _cut_incomplete_tail(self.path)
        self.done_ids = read_ids(self.path, id_key)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.written = 0

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        data = "".join(dumps(r) + "\n" for r in records).encode("utf-8")
        if not data:
            return
        view = memoryview(data)
        try:
            while view:  # os.write may write less than asked (signals, quotas); finish the batch
                n = os.write(self._fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.path}: {exc.strerror or exc}. The records written before are kept (a cut last line "
                "is dropped when the file is reopened): free some space and run the same command again to resume"
            ) from exc
        self.written += data.count(b"\n")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
