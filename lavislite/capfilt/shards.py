"""CapFilt's inputs and outputs: webdataset tar shards and BLIP json lists.

Input: each ``.tar`` is one shard (members grouped by key as webdataset does: ``dir/abc.jpg`` and
``dir/abc.json`` are sample ``dir/abc``); a json list is cut into shards of ``images_per_shard``
images. A shard that cannot be read is reported, never raised: the run goes on with the others.

Output (under ``output.dir``), written per shard as its samples come, each file to a temp name and renamed
into place once the shard is done:

    shards/<name>.tar        image + ``json`` {"caption": [kept texts], "texts": [{text, source, score, kept}], ...}
    annotations/<name>.json  BLIP's pre-training list [{"image", "caption"}], one entry per kept text
    images/<name>/<key>.jpg  (tar input with the json format: the images the json list points at)
    stats/<name>.json        written last: its presence marks the shard complete

Tar members carry fixed metadata (mtime 0, uid/gid 0, mode 644) so the same content gives the same bytes.
"""

from __future__ import annotations

import functools
import io
import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from lavislite.common.errors import ConfigError, DataError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTS = ("txt", "json")
_KEY = re.compile(r"^((?:.*/|)[^./][^.]*)\.([^/]*)$")  # webdataset's base_plus_ext: the key ends at the first dot


@dataclass(frozen=True)
class InputShard:
    """One unit of work: a tar file, or images ``[start, stop)`` of a json list."""

    name: str
    source: str
    start: int = 0
    stop: int = -1  # json slices only

    @property
    def is_tar(self) -> bool:
        return self.stop < 0


@dataclass
class Sample:
    """One image with its web texts; ``error`` names why it cannot be used (then it is counted, not processed)."""

    key: str
    image_bytes: bytes | None
    image_ext: str
    texts: list[str]
    image_ref: str | None = None  # json input: the image path as the json gives it
    meta: dict[str, Any] = field(default_factory=dict)  # the input json's other fields, passed through
    error: str | None = None


# -- listing ---------------------------------------------------------------------------------------
def list_shards(shards: Sequence[str], annotations: Sequence[str], images_per_shard: int) -> list[InputShard]:
    """Every input shard in input order (the same on every rank)."""
    if shards:
        from lavislite.inference.inputs import expand_shards

        paths = expand_shards(shards)
        names: dict[str, str] = {}
        out = []
        for p in paths:
            name = Path(p).name.removesuffix(".tar")
            if name in names:
                raise ConfigError(f"input shards {names[name]} and {p} have the same name {name!r}; the outputs would "
                                  "collide: give shards with distinct file names")
            names[name] = p
            out.append(InputShard(name, p))
        return out
    out = []
    for ann in annotations:
        rows = _read_json_list(ann)
        stem = Path(ann).stem
        for i, start in enumerate(range(0, len(rows), images_per_shard)):
            out.append(InputShard(f"{stem}-{i:05d}", ann, start, min(start + images_per_shard, len(rows))))
    names_seen = [s.name for s in out]
    if len(set(names_seen)) != len(names_seen):
        raise ConfigError(f"annotation files {list(annotations)} share a file name; rename them so their shards differ")
    return out


@functools.lru_cache(maxsize=4)  # every shard of a json list reads it; keep the last few parsed
def _read_json_list(path: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"annotation file {path}: cannot read it as json ({exc})") from exc
    if not isinstance(data, list):
        raise DataError(f"annotation file {path}: expected BLIP's list of {{'image', 'caption'}}, got {type(data).__name__}")
    return _group_by_image(data, path)


def _group_by_image(rows: list[Any], path: str) -> list[dict[str, Any]]:
    """One entry per image (first-seen order) with every caption of it; BLIP's files repeat the image per caption."""
    grouped: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("image"), str):
            raise DataError(f"annotation file {path}, entry {i}: needs an 'image' path string, got {str(row)[:80]}")
        caps = row.get("caption", [])
        caps = [caps] if isinstance(caps, str) else list(caps)
        entry = grouped.setdefault(row["image"], {**{k: v for k, v in row.items() if k != "caption"}, "caption": []})
        entry["caption"] += [str(c) for c in caps]
    return list(grouped.values())


# -- reading ---------------------------------------------------------------------------------------
class ShardReader:
    """Iterates a shard's samples one at a time (memory: one sample); ``error`` is set when the shard is
    unreadable or breaks off (the samples before the damage are yielded) and is never raised."""

    def __init__(self, shard: InputShard, image_root: str | None) -> None:
        self.shard, self.image_root = shard, image_root
        self.error: str | None = None

    def __iter__(self) -> Iterator[Sample]:
        return self._tar() if self.shard.is_tar else self._json()

    def _json(self) -> Iterator[Sample]:
        try:
            rows = _read_json_list(self.shard.source)[self.shard.start : self.shard.stop]
        except DataError as exc:
            self.error = str(exc)
            return
        root = Path(self.image_root) if self.image_root else Path(self.shard.source).parent
        for row in rows:
            ref = row["image"]
            path = Path(ref) if Path(ref).is_absolute() else root / ref
            meta = {k: v for k, v in row.items() if k not in ("image", "caption")}
            ext = path.suffix.lstrip(".").lower() or "jpg"
            try:
                yield Sample(ref, path.read_bytes(), ext, row["caption"], image_ref=ref, meta=meta)
            except OSError as exc:
                yield Sample(ref, None, ext, row["caption"], image_ref=ref, meta=meta, error=f"cannot read {path}: {exc.strerror or exc}")

    def _tar(self) -> Iterator[Sample]:
        # webdataset's layout: a sample's members are adjacent, so a new key ends the previous sample
        path, key, members, count = self.shard.source, None, {}, 0
        try:
            with tarfile.open(path, "r") as tar:
                for member in _members(tar):
                    m = _KEY.match(member.name) if member.isfile() else None
                    f = tar.extractfile(member) if m else None
                    if f is None:
                        continue
                    if m.group(1) != key and key is not None:
                        yield _sample(key, members, path)
                        count, members = count + 1, {}
                    key = m.group(1)
                    members[m.group(2).lower()] = f.read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            done = f" after {count} samples" if count else ""
            self.error = f"unreadable webdataset shard {path}{done}: {type(exc).__name__}: {' '.join(str(exc).split())}"
            return
        if key is not None:
            yield _sample(key, members, path)


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        member = tar.next()
        if member is None:
            return
        yield member


def _sample(key: str, members: dict[str, bytes], shard: str) -> Sample:
    ext = next((e for e in IMAGE_EXTS if e in members), None)
    texts: list[str] = []
    meta: dict[str, Any] = {}
    error = None
    if "txt" in members:
        texts = [members["txt"].decode("utf-8", errors="replace").strip()]
    elif "json" in members:
        try:
            obj = json.loads(members["json"].decode("utf-8"))
            cap = obj.get("caption", [])
            texts = [cap] if isinstance(cap, str) else [str(c) for c in cap]
            meta = {k: v for k, v in obj.items() if k != "caption"}
        except (ValueError, AttributeError) as exc:
            error = f"{shard}#{key}: .json is not an object with a 'caption' ({exc})"
    if ext is None:
        error = f"{shard}#{key}: no image member (.{'/.'.join(IMAGE_EXTS)})"
    return Sample(key, members.get(ext) if ext else None, ext or "", [t for t in texts if t], meta=meta, error=error)


def decode_image(sample: Sample):
    """The RGB PIL image of a sample (raises DataError naming the sample when the bytes are not an image)."""
    from PIL import Image, UnidentifiedImageError

    from lavislite.processors.image_processors import to_rgb

    try:
        with Image.open(io.BytesIO(sample.image_bytes or b"")) as im:
            im.load()
            return to_rgb(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # PIL's messages can hold an object address; the stats must read the same on every run
        reason = "not an image PIL can identify" if isinstance(exc, UnidentifiedImageError) else " ".join(str(exc).split())
        raise DataError(f"cannot decode image {sample.key}.{sample.image_ext}: {re.sub(' at 0x[0-9a-f]+', '', reason)}") from exc


# -- writing ---------------------------------------------------------------------------------------
def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
    tar.addfile(info, io.BytesIO(data))


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


class ShardWriter:
    """Writes one shard's kept samples as they come (the tar streams into a temp file); :meth:`commit` renames
    every output into place, and leaving the ``with`` block without it (an error, a kill) leaves no output."""

    def __init__(self, out_dir: Path, shard: InputShard, formats: Sequence[str]) -> None:
        self.out_dir, self.shard, self.formats = out_dir, shard, tuple(formats)
        self.entries: list[dict[str, str]] = []
        self._tar: tarfile.TarFile | None = None

    def __enter__(self) -> Self:
        from lavislite.common.download import atomic_write

        if "wds" in self.formats:
            self._tar_ctx = atomic_write(self.out_dir / "shards" / f"{self.shard.name}.tar")
            tmp = self._tar_ctx.__enter__()
            self._tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)
        return self

    def add(self, sample: Sample, texts: list[dict[str, Any]], kept: list[str]) -> None:
        """One processed sample; only samples with a kept text are written."""
        if not kept:
            return
        key = _safe_key(sample.key)
        if self._tar is not None:
            _tar_add(self._tar, f"{key}.{sample.image_ext}", sample.image_bytes or b"")
            _tar_add(self._tar, f"{key}.json", dumps({**sample.meta, "caption": kept, "texts": texts,
                                                      **({"image": sample.image_ref} if sample.image_ref else {})}))
        if "json" in self.formats:
            ref = sample.image_ref
            if ref is None:  # tar input: the json list needs image files, so the kept images are written out
                from lavislite.common.download import atomic_write

                ref = f"images/{self.shard.name}/{key}.{sample.image_ext}"
                with atomic_write(self.out_dir / ref) as tmp:
                    tmp.write_bytes(sample.image_bytes or b"")
            self.entries += [{"image": ref, "caption": text} for text in kept]

    def commit(self) -> None:
        from lavislite.common.download import atomic_write

        if self._tar is not None:
            self._tar.close()
            self._tar = None
            self._tar_ctx.__exit__(None, None, None)
        if "json" in self.formats:
            with atomic_write(self.out_dir / "annotations" / f"{self.shard.name}.json") as tmp:
                tmp.write_bytes(json.dumps(self.entries, ensure_ascii=False, indent=0).encode("utf-8") + b"\n")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._tar is not None:  # not committed: drop the temp file
            self._tar.close()
            self._tar_ctx.__exit__(exc_type or RuntimeError, exc or RuntimeError("not committed"), tb)


def _safe_key(key: str) -> str:
    """A sample key as a file stem: json image paths lose their extension and directories (dots would split the key)."""
    stem = key.rsplit(".", 1)[0] if "." in key.rsplit("/", 1)[-1] else key
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem)
