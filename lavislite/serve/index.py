"""The on-disk image index: normalised ITC embeddings in a faiss index, their image entries, the texts
(captions) for image->text search, and the identity of the model that made them.

Layout of an index directory::

    meta.json          format, model spec + weights digest, dim, faiss kind, the live files (below)
    seg-<gen>.npy      float32 (n, E) normalised image embeddings of one segment
    seg-<gen>.json     the segment's entries [{id, path, stamp}], row for row
    texts-<gen>.npy    float32 (t, E) normalised text embeddings; texts-<gen>.json: the texts
    faiss-<gen>.index  the faiss index over all segments in order (written when a build finishes)

Every change writes new files under a new generation number, then replaces ``meta.json`` atomically
(write, fsync, rename): a reader, or a build killed at any instant, sees either the old or the new
``meta.json`` and every file it names. Files that ``meta.json`` does not name are leftovers of an
interrupted write and are deleted by the next writer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lavislite.common.errors import ConfigError, DataError
from lavislite.serve.sources import Entry

FORMAT = "lavislite-index/1"
KINDS = ("flat", "ivf", "hnsw")
_OWN_FILE = re.compile(r"^(seg|texts|faiss)-\d{6}\.(npy|json|index)$|^meta\.json\.tmp.*$|^.*\.tmp-\d+$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a, dtype=np.float32))
    return buf.getvalue()


def import_faiss() -> Any:
    """faiss, imported on first use (its loader logs every CPU-feature probe at INFO; keep that quiet).

    Exact search of two or more queries goes through BLAS (faiss's default switches at 20): with the
    generic kernels of the PyPI wheel, 16 queries over 100k vectors took 1.68 s without BLAS and 0.36 s
    with it on a 2-core Xeon (bench/serve.py); one query stays on the direct kernel, which was faster there.
    """
    import logging

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    faiss.cvar.distance_compute_blas_threshold = 2
    return faiss


def read_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The index's ``meta.json``, or None when ``path`` holds no index yet."""
    p = Path(path) / "meta.json"
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{p}: unreadable index metadata ({exc}); delete the folder {path} and run lavislite index again") from exc
    if meta.get("format") != FORMAT:
        raise DataError(f"{p}: not a {FORMAT} index (format {meta.get('format')!r}); rebuild it with lavislite index")
    return meta


def build_faiss(vectors: np.ndarray, kind: str = "flat", nlist: int | None = None, hnsw_m: int = 32) -> Any:
    """A faiss inner-product index over ``vectors`` (normalised, so scores are cosines).

    ``flat``: exact search (default). ``ivf``: ``nlist`` k-means cells (default ~4 sqrt(n)), probed 16 at a
    time; for millions of images. ``hnsw``: a graph with ``hnsw_m`` links per node, no training.
    """
    faiss = import_faiss()
    n, dim = vectors.shape
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf":
        cells = int(nlist or max(1, min(65536, round(4 * n**0.5))))
        if n < cells:
            raise ConfigError(f"--index-type ivf needs at least {cells} images to train {cells} cells (have {n}); use flat or set --nlist")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
    else:
        raise ConfigError(f"--index-type {kind!r}: use one of {', '.join(KINDS)}")
    if n:
        index.add(x)
    return _tune(index)


def _tune(index: Any) -> Any:
    """Search-time settings (not all are stored by faiss.write_index): 16 IVF cells probed, HNSW efSearch 64."""
    if hasattr(index, "nprobe"):
        index.nprobe = min(16, int(index.nlist))
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = 64
    return index


class ImageIndex:
    """A loaded index (read-only): ``entries``, ``vectors`` (n, E), ``texts``, ``text_vectors`` (t, E), ``meta``."""

    def __init__(self, path: Path, meta: dict[str, Any], entries: list[Entry], vectors: np.ndarray,
                 texts: list[str], text_vectors: np.ndarray) -> None:
        self.path, self.meta = path, meta
        self.entries, self.vectors = entries, vectors
        self.texts, self.text_vectors = texts, text_vectors
        self._faiss: Any = None
        self._text_faiss: Any = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> ImageIndex:
        p = Path(path)
        meta = read_meta(p)
        if meta is None:
            raise DataError(f"{path}: no index here (no meta.json); build one with: lavislite index IMAGES --out {path}")
        entries, vectors = _read_segments(p, meta)
        texts, tv = _read_texts(p, meta)
        return cls(p, meta, entries, vectors, texts, tv)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def model(self) -> dict[str, Any]:
        """``{spec fields..., "digest"}`` of the model that made the embeddings."""
        return self.meta["model"]

    def faiss(self) -> Any:
        """The faiss index over :attr:`vectors` (read from disk when the build stored it, else built now)."""
        if self._faiss is None:
            name = self.meta.get("faiss")
            if name and (self.path / name).is_file():
                faiss = import_faiss()
                self._faiss = _tune(faiss.read_index(str(self.path / name)))
            else:
                self._faiss = build_faiss(self.vectors, self.meta.get("kind", "flat"), self.meta.get("nlist"))
        return self._faiss

    def search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(cosines (q, k'), rows (q, k'))`` of the images nearest each normalised query, ``k' = min(k, n)``."""
        k = min(int(k), len(self))
        scores, rows = self.faiss().search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, rows

    def search_texts(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search_vectors` over the indexed texts (exact inner product)."""
        if not self.texts:
            raise DataError(f"{self.path}: the index holds no texts for image->text search; index an annotation json "
                            "with captions or pass --texts FILE to lavislite index")
        if self._text_faiss is None:
            self._text_faiss = build_faiss(self.text_vectors, "flat")
        k = min(int(k), len(self.texts))
        return self._text_faiss.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def _read_segments(p: Path, meta: dict[str, Any]) -> tuple[list[Entry], np.ndarray]:
    entries: list[Entry] = []
    vecs = []
    for seg in meta["segments"]:
        try:
            rows = json.loads((p / f"{seg}.json").read_text(encoding="utf-8"))
            v = np.load(p / f"{seg}.npy")
        except (OSError, ValueError) as exc:
            raise DataError(f"{p}: segment {seg} is unreadable ({exc}); delete {p} and run lavislite index again") from exc
        if len(rows) != len(v):
            raise DataError(f"{p}: segment {seg} has {len(rows)} entries for {len(v)} vectors; rebuild the index")
        entries += [Entry.from_json(r) for r in rows]
        vecs.append(v)
    dim = int(meta["dim"])
    return entries, (np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32))


def _read_texts(p: Path, meta: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    name = meta.get("texts")
    if not name:
        return [], np.zeros((0, int(meta["dim"])), np.float32)
    return json.loads((p / f"{name}.json").read_text(encoding="utf-8")), np.load(p / f"{name}.npy")


class IndexWriter:
    """Changes an index directory one atomic commit at a time (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, model: dict[str, Any], dim: int, kind: str = "flat",
                 nlist: int | None = None) -> None:
        if kind not in KINDS:
            raise ConfigError(f"--index-type {kind!r}: use one of {', '.join(KINDS)}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        old = read_meta(self.path)
        self.meta = old or {"format": FORMAT, "model": model, "dim": int(dim), "kind": kind, "nlist": nlist,
                            "segments": [], "texts": None, "faiss": None, "generation": 0}
        self.meta.update(kind=kind, nlist=nlist)
        self._collect_garbage()

    def _next(self, prefix: str) -> str:
        self.meta["generation"] += 1
        return f"{prefix}-{self.meta['generation']:06d}"

    def _write_segment(self, entries: Sequence[Entry], vectors: np.ndarray) -> str:
        name = self._next("seg")
        _write_atomic(self.path / f"{name}.npy", _npy_bytes(vectors))
        _write_atomic(self.path / f"{name}.json", json.dumps([e.to_json() for e in entries]).encode())
        return name

    def commit(self) -> None:
        """Make the current meta the index's (atomic), then delete files it no longer names."""
        _write_atomic(self.path / "meta.json", json.dumps(self.meta, indent=1).encode())
        _fsync_dir(self.path)
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        live = {f"{s}.{ext}" for s in self.meta["segments"] for ext in ("npy", "json")}
        if self.meta.get("texts"):
            live |= {f"{self.meta['texts']}.npy", f"{self.meta['texts']}.json"}
        if self.meta.get("faiss"):
            live.add(self.meta["faiss"])
        for f in self.path.iterdir():
            if f.name not in live and f.name != "meta.json" and _OWN_FILE.match(f.name):
                f.unlink(missing_ok=True)

    def replace_all(self, entries: Sequence[Entry], vectors: np.ndarray) -> None:
        """One segment holding exactly ``entries`` (e.g. the rows kept after deletions), committed."""
        self.meta["segments"] = [self._write_segment(entries, vectors)] if len(entries) else []
        self.meta["faiss"] = None
        self.commit()

    def append(self, entries: Sequence[Entry], vectors: np.ndarray) -> None:
        """A new segment of freshly encoded images, committed."""
        if len(entries):
            self.meta["segments"].append(self._write_segment(entries, vectors))
            self.meta["faiss"] = None
            self.commit()

    def set_texts(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        name = self._next("texts")
        _write_atomic(self.path / f"{name}.npy", _npy_bytes(vectors))
        _write_atomic(self.path / f"{name}.json", json.dumps(list(texts)).encode())
        self.meta["texts"] = name
        self.commit()

    def finalize(self) -> ImageIndex:
        """Compact every segment into one (rows sorted by id, so a resumed build equals a clean one), store
        the faiss index over it and commit; returns the loaded result."""
        entries, vectors = _read_segments(self.path, self.meta)
        order = sorted(range(len(entries)), key=lambda i: entries[i].id)
        entries, vectors = [entries[i] for i in order], vectors[order]
        if len(self.meta["segments"]) != 1 or order != list(range(len(order))):
            self.meta["segments"] = [self._write_segment(entries, vectors)] if entries else []
        if entries:
            faiss = import_faiss()
            name = self._next("faiss") + ".index"
            tmp = self.path / f"{name}.tmp-{os.getpid()}"
            faiss.write_index(build_faiss(vectors, self.meta["kind"], self.meta.get("nlist")), str(tmp))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path / name)
            self.meta["faiss"] = name
        self.commit()
        return ImageIndex.open(self.path)
