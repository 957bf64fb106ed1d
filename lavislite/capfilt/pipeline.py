"""The CapFilt run: shards -> (captioner, filter) -> kept texts, one shard at a time, resumable.

* Every rank lists the same input shards and takes ``shards[rank::world]`` (torchrun; gloo on CPU,
  nccl on GPU); it writes only its shards' files, so no rank waits on another until the end, where
  rank 0 merges every shard's stats into ``summary.json`` and ``scores.png`` (and the json lists into
  ``bootstrapped.json``).
* A shard's ``stats/<name>.json`` is written last (atomically): a shard with it is complete and is
  skipped on restart; one without it is redone from scratch.
* Each shard seeds its own sampler from (``run.seed``, shard name), and its batches depend on the shard
  alone, so the output does not depend on the number of ranks or on interruptions.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lavislite.capfilt import shards as io
from lavislite.capfilt import stats as st
from lavislite.capfilt.config import CapFiltConfig
from lavislite.common.errors import LavisliteError

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What :func:`run` returns on every rank (``summary`` on rank 0 only)."""

    output_dir: Path
    rank: int
    world: int
    processed: list[str]
    skipped: list[str]
    images: int
    seconds: float
    summary: dict[str, Any] | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def shard_seed(seed: int, name: str) -> int:
    """A fixed seed per shard (crc32: stable across processes and Python versions)."""
    return zlib.crc32(f"{seed}:{name}".encode())


def stats_path(out_dir: Path, name: str) -> Path:
    return out_dir / "stats" / f"{name}.json"


def process_shard(shard: io.InputShard, cfg: CapFiltConfig, captioner: Any, flt: Any, bar: Any = None) -> dict[str, Any]:
    """Caption and filter one shard, write its outputs and then its stats; returns the stats."""
    import torch

    from lavislite.common.download import atomic_write

    _remove_stale_temps(cfg.output_dir, shard.name)
    stats = st.new_stats(shard.name, shard.source, cfg.histogram_bins, cfg.threshold)
    device = flt.loaded.device
    generator = torch.Generator(device=device).manual_seed(shard_seed(cfg.seed, shard.name)) if captioner is not None else None
    reader = io.ShardReader(shard, cfg.image_root)
    with io.ShardWriter(cfg.output_dir, shard, cfg.formats) as writer:
        batch: list = []

        def flush() -> None:
            _process_batch(batch, cfg, captioner, flt, generator, stats, writer)
            if bar is not None:
                bar.update(len(batch))
            batch.clear()

        for sample in reader:
            stats["images"] += 1
            image = _decode(sample, stats)
            if image is not None:
                batch.append((sample, image))
            if len(batch) == cfg.batch_size:
                flush()
        if batch:
            flush()
        if reader.error:
            stats["error"] = reader.error
            logger.warning("capfilt: %s", reader.error)
        stats["corrupt_images"] = len(stats["corrupt"])
        writer.commit()
    with atomic_write(stats_path(cfg.output_dir, shard.name)) as tmp:
        tmp.write_bytes(io.dumps(stats))
    return stats


def _decode(sample: io.Sample, stats: dict[str, Any]) -> Any:
    """The sample's PIL image, or None after recording why it cannot be used."""
    if sample.error is None:
        try:
            return io.decode_image(sample)
        except LavisliteError as exc:
            sample.error = str(exc)
    stats["corrupt"].append({"key": sample.key, "error": sample.error})
    return None


def _process_batch(batch: list, cfg: CapFiltConfig, captioner: Any, flt: Any, generator: Any, stats: dict[str, Any],
                   writer: io.ShardWriter) -> None:
    """Caption (unless the captioner is off), score every web and synthetic text, keep, count, write."""
    import torch

    pil = [im for _, im in batch]
    if captioner is not None:
        synthetic = captioner.captions(torch.stack([captioner.process(im) for im in pil]), generator)
    else:
        synthetic = [[] for _ in batch]
    web = [s.texts for s, _ in batch]
    scores = flt.scores(torch.stack([flt.process(im) for im in pil]), [w + y for w, y in zip(web, synthetic)])
    for (sample, _), w, y, sc in zip(batch, web, synthetic, scores):
        texts, kept = [], []
        for j, text in enumerate(w + y):
            source = "web" if j < len(w) else "synthetic"
            do_filter = cfg.filter_web if source == "web" else cfg.filter_synthetic
            keep = (not do_filter) or sc[j] >= cfg.threshold
            texts.append({"text": text, "source": source, "score": round(float(sc[j]), 6), "kept": keep})
            if keep:
                kept.append(text)
        st.add_scores(stats, "web", sc[: len(w)])
        st.add_scores(stats, "synthetic", sc[len(w) :])
        stats["texts_in"] += len(w)
        stats["synthetic_in"] += len(y)
        stats["kept_web"] += sum(t["kept"] for t in texts if t["source"] == "web")
        stats["kept_synthetic"] += sum(t["kept"] for t in texts if t["source"] == "synthetic")
        stats["images_kept"] += bool(kept)
        writer.add(sample, texts, kept)


def _remove_stale_temps(out_dir: Path, name: str) -> None:
    """Temp files a killed run left for this shard (atomic writes never rename a partial file into place)."""
    for sub in ("shards", "annotations", "stats", f"images/{name}"):
        folder = out_dir / sub
        if folder.is_dir():
            pattern = ".*.tmp" if sub.startswith("images/") else f".{name}.*.tmp"
            for f in folder.glob(pattern):
                f.unlink(missing_ok=True)


def run(cfg: CapFiltConfig) -> RunResult:
    """Bootstrap every input shard (this rank's share under torchrun); see the module docstring."""
    from lavislite.common.utils import resolve_device
    from lavislite.inference import rank_split

    device = resolve_device(cfg.device, what="run.device")
    part = rank_split.init(device)
    try:
        all_shards = io.list_shards(cfg.shards, cfg.annotations, cfg.images_per_shard)
        mine = part.take(all_shards)
        todo = [s for s in mine if not stats_path(cfg.output_dir, s.name).is_file()]
        skipped = [s.name for s in mine if s not in todo]
        result = RunResult(cfg.output_dir, part.rank, part.world, [], skipped, 0, 0.0)
        if skipped:
            logger.info("capfilt rank %d: %d shard(s) already complete, skipped", part.rank, len(skipped))
        if todo:
            _process_all(todo, cfg, device, part.rank, result)
        rank_split.barrier()
        if part.rank == 0:
            result.summary = finalize(cfg, all_shards)
        return result
    finally:
        rank_split.finish()


def _process_all(todo: Sequence[io.InputShard], cfg: CapFiltConfig, device: Any, rank: int, result: RunResult) -> None:
    from lavislite.capfilt.models import Captioner, Filter

    captioner = Captioner(cfg, device) if cfg.use_captioner else None
    flt = Filter(cfg, device)
    bar = _bar(cfg, rank, len(todo))
    t0 = time.perf_counter()
    try:
        for shard in todo:
            stats = process_shard(shard, cfg, captioner, flt, bar)
            result.processed.append(shard.name)
            result.images += stats["images"] - stats["corrupt_images"]
            if bar is not None:
                bar.set_postfix_str(f"{len(result.processed)}/{len(todo)} shards")
            logger.info("capfilt rank %d: %s done (%d images, kept %d/%d web, %d/%d synthetic)", rank, shard.name,
                        stats["images"], stats["kept_web"], stats["texts_in"], stats["kept_synthetic"], stats["synthetic_in"])
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - t0


def _bar(cfg: CapFiltConfig, rank: int, n_shards: int) -> Any:
    if not cfg.progress or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=f"capfilt rank {rank}", unit="img", position=rank, dynamic_ncols=True, leave=False)


def finalize(cfg: CapFiltConfig, all_shards: Sequence[io.InputShard]) -> dict[str, Any]:
    """Merge every complete shard's stats (input order) into summary.json, scores.png and bootstrapped.json."""
    from lavislite.common.download import atomic_write

    out = cfg.output_dir
    complete = [s for s in all_shards if stats_path(out, s.name).is_file()]
    summary = st.merge([st.read_stats(stats_path(out, s.name)) for s in complete])
    summary["missing_shards"] = [s.name for s in all_shards if s not in complete]
    with atomic_write(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if complete:
        with atomic_write(out / "scores.png") as tmp:
            st.plot(summary, tmp)
    if "json" in cfg.formats:
        entries: list[Any] = []
        for s in complete:
            path = out / "annotations" / f"{s.name}.json"
            if path.is_file():
                entries += json.loads(path.read_text(encoding="utf-8"))
        with atomic_write(out / "bootstrapped.json") as tmp:
            tmp.write_text(json.dumps(entries, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    return summary
