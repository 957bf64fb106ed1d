"""What ``lavislite index`` indexes: image files in folders, members of webdataset shards, or the images
(and captions) an annotation json names; and how one such image is read back for ITM re-ranking.

Every image is an :class:`Entry`: a stable ``id`` (the normalised path, or ``<shard>#<key>`` for a shard
member, as the inference commands use), the ``path`` to read, and a ``stamp`` (size, mtime in ns) of the
file holding it, which tells an incremental re-index whether the image changed.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lavislite.common.errors import DataError
from lavislite.inference.inputs import (
    IMAGE_EXTS,
    discover,
    expand_shards,
    is_shard_spec,
)

# webdataset's key: the member path up to the first dot of its file name
_WDS_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


@dataclass(frozen=True)
class Entry:
    """One indexed image: ``id`` (unique, stable), ``path`` (file or ``shard.tar#key``), ``stamp`` (size, mtime_ns)."""

    id: str
    path: str
    stamp: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "stamp": list(self.stamp)}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Entry:
        return Entry(str(d["id"]), str(d["path"]), (int(d["stamp"][0]), int(d["stamp"][1])))


def _stamp(path: str | os.PathLike) -> tuple[int, int]:
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns)


def _shard_entries(shard: str) -> list[Entry]:
    shard = os.path.normpath(shard)
    stamp = _stamp(shard)
    keys: dict[str, None] = {}
    try:
        with tarfile.open(shard) as tar:
            for m in tar:
                match = _WDS_KEY.match(m.name)
                if m.isfile() and match and "." + match.group(2).lower() in IMAGE_EXTS:
                    keys.setdefault(match.group(1))
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot list the webdataset shard {shard}: {exc}") from exc
    return [Entry(f"{shard}#{k}", f"{shard}#{k}", stamp) for k in keys]


def annotation_sources(path: Path, image_root: str | None) -> tuple[list[Entry], list[str]]:
    """Images and captions of an annotation json: a list of ``{"image": relative path, "caption": str | [str]}``
    records (BLIP's format); paths are relative to ``image_root`` (default: the json's folder)."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the annotation file {path}: {exc}") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) and "image" in r for r in records):
        raise DataError(f"{path}: expected a JSON list of records with an 'image' key (and optional 'caption')")
    root = Path(image_root) if image_root else path.parent
    entries: dict[str, Entry] = {}
    texts: dict[str, None] = {}
    for r in records:
        img = os.path.normpath(str(root / str(r["image"])))
        if img not in entries:
            if not os.path.isfile(img):
                raise DataError(f"{path}: image {r['image']!r} not found under {root} (set --image-root to the images' folder)")
            entries[img] = Entry(img, img, _stamp(img))
        caps = r.get("caption", [])
        for c in [caps] if isinstance(caps, str) else caps:
            texts.setdefault(str(c))
    return list(entries.values()), list(texts)


def discover_entries(inputs: Sequence[str], image_root: str | None = None) -> tuple[list[Entry], list[str]]:
    """Entries (sorted by id) and captions of image folders/files, webdataset shards and annotation jsons."""
    entries: dict[str, Entry] = {}
    texts: list[str] = []
    files = []
    for spec in inputs:
        if is_shard_spec(spec):
            for shard in expand_shards([spec]):
                for e in _shard_entries(shard):
                    entries.setdefault(e.id, e)
        elif str(spec).endswith(".json"):
            found, caps = annotation_sources(Path(spec), image_root)
            for e in found:
                entries.setdefault(e.id, e)
            texts += caps
        else:
            files.append(spec)
    if files:
        for item in discover(files):
            entries.setdefault(item.id, Entry(item.id, item.path, _stamp(item.path)))
    if not entries:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}")
    return sorted(entries.values(), key=lambda e: e.id), list(dict.fromkeys(texts))


class ImageReader:
    """``reader(path) -> PIL RGB image`` for files and ``shard.tar#key`` members (the last shard stays open,
    so members of one shard read in order cost one pass)."""

    def __init__(self) -> None:
        self._tar: tuple[str, tarfile.TarFile, dict[str, tarfile.TarInfo]] | None = None

    def _member(self, shard: str, key: str) -> bytes:
        if self._tar is None or self._tar[0] != shard:
            self.close()
            tar = tarfile.open(shard)  # noqa: SIM115  (kept open across calls; closed by close())
            members = {}
            for m in tar.getmembers():
                match = _WDS_KEY.match(m.name)
                if m.isfile() and match and "." + match.group(2).lower() in IMAGE_EXTS:
                    members.setdefault(match.group(1), m)
            self._tar = (shard, tar, members)
        _, tar, members = self._tar
        if key not in members:
            raise DataError(f"{shard}: no image member with key {key!r} (the shard changed since it was indexed; re-run lavislite index)")
        f = tar.extractfile(members[key])
        if f is None:
            raise DataError(f"{shard}#{key}: not a regular file")
        return f.read()

    def __call__(self, path: str):
        from PIL import Image

        from lavislite.processors.image_processors import to_rgb

        shard, sep, key = path.partition("#")
        try:
            if sep and shard.endswith(".tar"):
                with Image.open(io.BytesIO(self._member(shard, key))) as im:
                    im.load()
                    return to_rgb(im)
            with Image.open(path) as im:
                im.load()
                return to_rgb(im)
        except (OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"cannot read image {path}: {exc}") from exc

    def close(self) -> None:
        if self._tar is not None:
            self._tar[1].close()
            self._tar = None
