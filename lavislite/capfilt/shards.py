"""CapFilt's inputs and outputs: webdataset tar shards and BLIP json lists.

Input: each ``.tar`` is one shard (members grouped by key as webdataset does: ``dir/abc.jpg`` and
``dir/abc.json`` are sample ``dir/abc``); a json list is cut into shards of ``images_per_shard``
images. A shard that cannot be read is reported, never raised: the run goes on with the others.

Output (under ``output.dir``), written per shard, each file to a temp name and renamed into place:

    shards/<name>.tar        image + ``json`` {"caption": [kept texts], "texts": [{text, source, score, kept}], ...}
    annotations/<name>.json  BLIP's pre-training list [{"image", "caption"}], one entry per kept text
    images/<name>/<key>.jpg  (tar input with the json format: the images the json list points at)
    stats/<name>.json        written last: its presence marks the shard complete

Tar members carry fixed metadata (mtime 0, uid/gid 0, mode 644) so the same content gives the same bytes.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class ShardContent:
    samples: list[Sample]
    error: str | None = None  # the shard itself is unreadable (or truncated: then samples holds what was read)


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


_JSON_CACHE: dict[str, list] = {}


def _read_json_list(path: str) -> list[dict[str, Any]]:
    if path not in _JSON_CACHE:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"annotation file {path}: cannot read it as json ({exc})") from exc
        if not isinstance(data, list):
            raise DataError(f"annotation file {path}: expected BLIP's list of {{'image', 'caption'}}, got {type(data).__name__}")
        _JSON_CACHE[path] = _group_by_image(data, path)
    return _JSON_CACHE[path]


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
def read_shard(shard: InputShard, image_root: str | None) -> ShardContent:
    """The shard's samples; an unreadable tar or json gives ``error`` (and whatever was read before it)."""
    if shard.is_tar:
        return _read_tar(shard.source)
    try:
        rows = _read_json_list(shard.source)[shard.start : shard.stop]
    except DataError as exc:
        return ShardContent([], str(exc))
    root = Path(image_root) if image_root else Path(shard.source).parent
    samples = []
    for row in rows:
        ref = row["image"]
        path = Path(ref) if Path(ref).is_absolute() else root / ref
        meta = {k: v for k, v in row.items() if k not in ("image", "caption")}
        ext = path.suffix.lstrip(".").lower() or "jpg"
        try:
            data = path.read_bytes()
            samples.append(Sample(ref, data, ext, row["caption"], image_ref=ref, meta=meta))
        except OSError as exc:
            samples.append(Sample(ref, None, ext, row["caption"], image_ref=ref, meta=meta, error=f"cannot read {path}: {exc.strerror or exc}"))
    return ShardContent(samples)


def _read_tar(path: str) -> ShardContent:
    groups: dict[str, dict[str, bytes]] = {}
    error = None
    try:
        with tarfile.open(path, "r") as tar:
            for member in _members(tar):
                if not member.isfile():
                    continue
                m = _KEY.match(member.name)
                if not m:
                    continue
                f = tar.extractfile(member)
                if f is None:
                    continue
                groups.setdefault(m.group(1), {})[m.group(2).lower()] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        done = f" after {len(groups)} samples" if groups else ""
        error = f"unreadable webdataset shard {path}{done}: {type(exc).__name__}: {' '.join(str(exc).split())}"
    return ShardContent([_sample(key, members, path) for key, members in groups.items()], error)


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


def write_outputs(out_dir: Path, shard: InputShard, records: list[dict[str, Any]], formats: Sequence[str]) -> None:
    """Write one shard's kept samples (``records``: sample, texts) in every format; stats are written by the caller."""
    from lavislite.common.download import atomic_write

    kept = [r for r in records if r["kept"]]
    if "wds" in formats:
        with atomic_write(out_dir / "shards" / f"{shard.name}.tar") as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for r in kept:
                s: Sample = r["sample"]
                key = _safe_key(s.key)
                _tar_add(tar, f"{key}.{s.image_ext}", s.image_bytes or b"")
                _tar_add(tar, f"{key}.json", dumps({**s.meta, "caption": r["kept"], "texts": r["texts"],
                                                    **({"image": s.image_ref} if s.image_ref else {})}))
    if "json" in formats:
        entries = []
        for r in kept:
            s = r["sample"]
            if s.image_ref is not None:
                ref = s.image_ref
            else:  # tar input: the json list needs image files, so the kept images are written out
                ref = f"images/{shard.name}/{_safe_key(s.key)}.{s.image_ext}"
                target = out_dir / ref
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(target) as tmp:
                    tmp.write_bytes(s.image_bytes or b"")
            entries += [{"image": ref, "caption": text} for text in r["kept"]]
        with atomic_write(out_dir / "annotations" / f"{shard.name}.json") as tmp:
            tmp.write_bytes(json.dumps(entries, ensure_ascii=False, indent=0).encode("utf-8") + b"\n")


def _safe_key(key: str) -> str:
    """A sample key as a file stem: json image paths lose their extension and directories (dots would split the key)."""
    stem = key.rsplit(".", 1)[0] if "." in key.rsplit("/", 1)[-1] else key
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem)
