"""``build_index``: encode what is new or changed since the last run into an :class:`IndexWriter`.

A run compares the sources with the index's entries by id and stamp (size, mtime): entries whose image
is gone or changed leave the index in one commit; new and changed images are then encoded in chunks of
``commit_every``, each chunk committed as a segment, so a killed run loses at most the chunk in flight
and the next run goes on from there. The last step compacts the segments (rows sorted by id) and stores
the faiss index. Under ``torchrun`` every rank encodes its share of each chunk; rank 0 writes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lavislite.common import dist
from lavislite.common.errors import ConfigError, DataError
from lavislite.serve.identity import LoadedModel, ModelSpec
from lavislite.serve.index import ImageIndex, IndexWriter, read_meta
from lavislite.serve.sources import Entry, ImageReader

logger = logging.getLogger(__name__)


@dataclass
class BuildStats:
    """What one run did: images encoded, kept from before, removed (gone or changed), skipped (unreadable)."""

    encoded: int = 0
    kept: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def model_record(lm: LoadedModel) -> dict[str, Any]:
    return {**lm.spec.to_json(), "digest": lm.digest}


def check_same_model(index_model: dict[str, Any], lm: LoadedModel, where: str) -> None:
    """Raise unless ``lm`` has the weights that made the index at ``where``; the message names both models."""
    if index_model.get("digest") != lm.digest:
        made = ModelSpec.from_json(index_model).label
        raise ConfigError(
            f"the index {where} was made by {made} (weights {index_model.get('digest', '?')[:12]}), but the model given is "
            f"{lm.spec.label} (weights {lm.digest[:12]}); its embeddings are not comparable. Use the index's model "
            f"(leave out --model) or build a new index with this one (lavislite index ... --out NEW_DIR)."
        )


def embed_images(lm: LoadedModel, pils: list) -> np.ndarray:
    """Normalised ITC image embeddings (n, E) float32: ``encode_image``'s projection (retrieval protocol) or
    ``extract_features``' (feature extractors)."""
    x = lm.images(pils)
    with torch.inference_mode():
        if hasattr(lm.model, "encode_image"):
            proj = lm.model.encode_image(x)[1]
        else:
            proj = lm.model.extract_features({"image": x}, mode="image").image_embeds_proj[:, 0]
    if proj.dim() != 2:  # the retrieval protocol allows several ITC vectors per image; an index row holds one
        raise ConfigError(f"{lm.spec.label} gives {tuple(proj.shape[1:])} ITC features per image; the index stores one "
                          "vector per image (BLIP's); use a model with one ITC vector per image")
    return torch.nn.functional.normalize(proj.float(), dim=-1).cpu().numpy()


def embed_texts(lm: LoadedModel, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Normalised ITC text embeddings (t, E) float32 of the cleaned texts."""
    out = []
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            chunk = [lm.txt(t) for t in texts[s : s + batch_size]]
            if hasattr(lm.model, "encode_text"):
                proj = lm.model.encode_text(chunk)[0]
            else:
                proj = lm.model.extract_features({"text_input": chunk}, mode="text").text_embeds_proj[:, 0]
            out.append(torch.nn.functional.normalize(proj.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _encode(lm: LoadedModel, entries: Sequence[Entry], batch_size: int, skip_bad: bool, reader: ImageReader,
            stats: BuildStats, on_batch) -> tuple[list[Entry], np.ndarray]:
    kept, vecs = [], []
    for s in range(0, len(entries), batch_size):
        pils, ok = [], []
        for e in entries[s : s + batch_size]:
            try:
                pils.append(reader(e.path))
                ok.append(e)
            except DataError as exc:
                if not skip_bad:
                    raise DataError(f"{exc} (pass --skip-bad to skip unreadable images)") from exc
                stats.skipped.append((e.id, str(exc)))
        if pils:
            vecs.append(embed_images(lm, pils))
            kept += ok
        on_batch(len(entries[s : s + batch_size]))
    return kept, (np.concatenate(vecs) if vecs else np.zeros((0, 0), np.float32))


def build_index(
    lm: LoadedModel,
    entries: Sequence[Entry],
    out: str,
    *,
    texts: Sequence[str] = (),
    kind: str = "flat",
    nlist: int | None = None,
    batch_size: int = 32,
    commit_every: int = 1024,
    skip_bad: bool = False,
    show_progress: bool = True,
) -> tuple[ImageIndex | None, BuildStats]:
    """Bring the index at ``out`` up to date with ``entries`` (and ``texts``); returns the loaded index on
    rank 0 (None elsewhere) and what was done. Raises if the index was made by another model."""
    if commit_every < 1 or batch_size < 1:
        raise ConfigError(f"--commit-every {commit_every} / --batch-size {batch_size}: use integers >= 1")
    start = time.monotonic()
    rank, world = dist.get_rank(), dist.get_world_size()
    stats = BuildStats()
    meta = read_meta(out)
    if meta is not None:
        check_same_model(meta["model"], lm, out)
        old = ImageIndex.open(out)
        old_entries, old_vectors = old.entries, old.vectors
    else:
        old_entries, old_vectors = [], np.zeros((0, 0), np.float32)
    wanted = {e.id: e for e in entries}
    keep_rows = [i for i, e in enumerate(old_entries) if wanted.get(e.id) == e]
    have = {old_entries[i].id for i in keep_rows}
    todo = [e for e in entries if e.id not in have]
    stats.kept, stats.removed = len(keep_rows), len(old_entries) - len(keep_rows)
    dist.barrier()  # every rank has read the index before rank 0 commits (and deletes superseded files)

    writer = None
    if rank == 0:
        dim = _dim(lm) if meta is None else int(meta["dim"])
        writer = IndexWriter(out, model_record(lm), dim, kind, nlist)
        if stats.removed:
            writer.replace_all([old_entries[i] for i in keep_rows], old_vectors[keep_rows])
    bar = _bar(len(todo), show_progress and rank == 0)
    reader = ImageReader()
    try:
        for s in range(0, len(todo), commit_every):
            chunk = todo[s : s + commit_every]
            mine = chunk[rank::world]
            got = _encode(lm, mine, batch_size, skip_bad, reader, stats, lambda n: bar.update(n * world) if bar else None)
            parts = dist.all_gather_object(got)
            if writer is not None:
                new = [e for p in parts for e in p[0]]
                vecs = [p[1] for p in parts if len(p[0])]
                if new:
                    writer.append(new, np.concatenate(vecs))
                stats.encoded += len(new)
    finally:
        reader.close()
        if bar is not None:
            bar.close()
    skipped = dist.all_gather_object(stats.skipped)
    stats.skipped = [s for part in skipped for s in part]
    result = None
    if writer is not None:
        if texts and (writer.meta.get("texts") is None or ImageIndex.open(out).texts != list(texts)):
            writer.set_texts(list(texts), embed_texts(lm, list(texts)))
        result = writer.finalize()
    dist.barrier()
    stats.seconds = time.monotonic() - start
    return result, stats


def _dim(lm: LoadedModel) -> int:
    from PIL import Image

    return int(embed_images(lm, [Image.new("RGB", (8, 8))]).shape[1])


def _bar(total: int, enabled: bool):
    if not enabled or not total or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="index", unit="image", dynamic_ncols=True, leave=False)
