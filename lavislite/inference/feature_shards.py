"""Feature arrays written as shards: ``<dir>/<prefix>-00000.safetensors`` (or ``.npy`` + ``.ids.json``).

* A shard holds up to ``shard_size`` rows: tensor ``features`` (n, ...) and the ids of its rows, in the
  safetensors metadata (``ids``, a JSON list) or, for ``.npy``, in the ``.ids.json`` written after the array.
* Each file is written to a temp name and renamed into place; a ``.npy`` counts only once its
  ``.ids.json`` exists. So a crash never leaves a shard that reads as complete but is not; rows still
  buffered in memory are recomputed on the next run (their ids are not in any shard).
* Each rank writes its own prefix (``rank<r>``), so torchrun ranks never touch each other's files;
  :func:`load_feature_shards` reads every shard of the directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lavislite.common.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

FORMATS = ("safetensors", "npy")
_NAME = re.compile(r"^(?P<prefix>.+)-(?P<seq>\d{5})\.(?P<ext>safetensors|npy)$")


def _committed(directory: Path) -> list[tuple[Path, str]]:
    """(shard file, format) for every complete shard in ``directory``, sorted by name."""
    out = []
    for f in sorted(directory.iterdir()) if directory.is_dir() else []:
        m = _NAME.match(f.name)
        if not m:
            continue
        if m["ext"] == "npy" and not f.with_suffix(".ids.json").is_file():
            continue  # the array was written but its ids were not: not committed
        out.append((f, m["ext"]))
    return out


def _read_ids(path: Path, fmt: str) -> list[str]:
    try:
        if fmt == "npy":
            return list(json.loads(path.with_suffix(".ids.json").read_text(encoding="utf-8")))
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            return list(json.loads((f.metadata() or {})["ids"]))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"feature shard {path} is unreadable ({exc}); delete it (its rows will be recomputed)") from exc


def shard_ids(directory: str | os.PathLike) -> set[str]:
    """Ids of every row in the complete shards of ``directory``."""
    ids: set[str] = set()
    for f, fmt in _committed(Path(directory)):
        ids.update(_read_ids(f, fmt))
    return ids


def load_feature_shards(directory: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(ids, features)`` of every complete shard of ``directory`` (all ranks), rows in shard-name order."""
    ids: list[str] = []
    arrays = []
    for f, fmt in _committed(Path(directory)):
        ids += _read_ids(f, fmt)
        if fmt == "npy":
            arrays.append(np.load(f, allow_pickle=False))
        else:
            from safetensors.numpy import load_file

            arrays.append(load_file(str(f))["features"])
    if not arrays:
        raise DataError(f"no feature shards in {directory}")
    return ids, np.concatenate(arrays)


class ShardWriter:
    """Buffers ``(id, row)`` pairs and writes a shard every ``shard_size`` rows (and at :meth:`close`)."""

    def __init__(self, directory: str | os.PathLike, fmt: str = "safetensors", shard_size: int = 4096, prefix: str = "rank0") -> None:
        if fmt not in FORMATS:
            raise ConfigError(f"feature shard format {fmt!r}; use one of {', '.join(FORMATS)}")
        if int(shard_size) < 1:
            raise ConfigError(f"--shard-size {shard_size}: use an integer >= 1")
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise ConfigError(f"--output {self.dir} is a file; feature shards go into a directory (or name a .jsonl file)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fmt, self.shard_size, self.prefix = fmt, int(shard_size), prefix
        seqs = [int(m["seq"]) for f in self.dir.iterdir() if (m := _NAME.match(f.name)) and m["prefix"] == prefix]
        self.seq = max(seqs, default=-1) + 1
        self.ids: list[str] = []
        self.rows: list[np.ndarray] = []
        self.files: list[Path] = []

    def add(self, ids: Sequence[str], rows: Any) -> None:
        rows = np.asarray(rows)
        if len(ids) != len(rows):
            raise ValueError(f"{len(ids)} ids for {len(rows)} rows")
        self.ids += list(ids)
        self.rows += list(rows)
        while len(self.ids) >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, n: int) -> None:
        from lavislite.common.utils import atomic_write

        ids, rows = self.ids[:n], np.stack(self.rows[:n])
        self.ids, self.rows = self.ids[n:], self.rows[n:]
        path = self.dir / f"{self.prefix}-{self.seq:05d}.{self.fmt}"
        self.seq += 1
        if self.fmt == "npy":
            with atomic_write(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, rows, allow_pickle=False)
            with atomic_write(path.with_suffix(".ids.json")) as tmp:  # the commit marker
                tmp.write_text(json.dumps(ids), encoding="utf-8")
        else:
            from safetensors.numpy import save_file

            with atomic_write(path) as tmp:
                save_file({"features": np.ascontiguousarray(rows)}, str(tmp), metadata={"ids": json.dumps(ids)})
        self.files.append(path)

    def close(self) -> None:
        if self.ids:
            self._flush(len(self.ids))
