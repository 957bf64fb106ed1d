"""Input discovery: image/video files, folders of them, and webdataset tar shards.

Every input becomes an :class:`Item` with a stable ``id`` (the path as given, normalised, or
``<shard>#<key>`` for a shard member). Resuming and de-duplication key on that id, so the same command
line finds the same ids on every run. Folders are walked recursively in sorted order.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from lavislite.common.errors import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
SHARD_EXTS = (".tar",)
_BRACES = re.compile(r"\{\d+\.\.\d+\}")


@dataclass(frozen=True)
class Item:
    """One input: ``id`` (stable, unique) and the file ``path`` to read."""

    id: str
    path: str


def is_shard_spec(spec: str) -> bool:
    """A webdataset shard or brace pattern (``data/{000..009}.tar``)."""
    return str(spec).endswith(SHARD_EXTS) or bool(_BRACES.search(str(spec)))


def expand_shards(specs: Iterable[str]) -> list[str]:
    """Brace patterns expanded (webdataset's notation); every shard must exist."""
    from webdataset.shardlists import expand_urls

    out: list[str] = []
    for spec in specs:
        for url in expand_urls(str(spec)):
            if not Path(url).is_file():
                raise DataError(f"webdataset shard not found: {url} (from {spec!r}). Check the path or the brace range.")
            out.append(url)
    return list(dict.fromkeys(out))


def _walk(folder: Path, exts: Sequence[str]) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(tuple(exts)) and not name.startswith("."):
                found.append(Path(root) / name)
    return found


def discover(inputs: Sequence[str], exts: Sequence[str] = IMAGE_EXTS, what: str = "image") -> list[Item]:
    """Files named on the command line (any extension) and, from folders, files ending in ``exts``.

    Order: as given, each folder in sorted walk order; a file named twice is kept once.
    Raises :class:`DataError` for a path that does not exist or when nothing is found.
    """
    items: dict[str, Item] = {}
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.is_dir():
            files = _walk(path, exts)
            if not files:
                raise DataError(f"no {what} files ({', '.join(exts)}) in the folder {path}; check the path")
        elif path.is_file():
            files = [path]
        else:
            raise DataError(f"no such {what} file or folder: {spec}. Check the path.")
        for f in files:
            key = os.path.normpath(str(f))
            items.setdefault(key, Item(key, key))
    if not items:
        raise DataError(f"no {what} inputs given; name {what} files or folders")
    return list(items.values())


def split_inputs(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """(file/folder inputs, webdataset shard specs)."""
    files = [s for s in inputs if not is_shard_spec(s)]
    shards = [s for s in inputs if is_shard_spec(s)]
    return files, shards
