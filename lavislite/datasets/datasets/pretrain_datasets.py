"""Pre-training data: JSON lists of image-caption pairs, and webdataset tar shards (streamed).

* ``PretrainJsonDataset``: BLIP's ``pretrain_dataset`` files (``{"image", "caption"}``; a list of captions
  gives one sample per caption), map-style.
* ``WebDatasetPretrain``: an ``IterableDataset`` over ``.tar`` shards whose members share a key and carry
  the image (``jpg``/``jpeg``/``png``/``webp``) and the text (``txt``, or ``json`` with a ``caption`` string
  or list). The shards are split by rank (``torch.distributed`` when initialised) and by DataLoader worker:
  each consumer reads every ``consumers``-th shard; when there are fewer shards than consumers
  (ranks x workers) every consumer reads all shards and keeps every ``consumers``-th sample instead, so
  each sample is still read by exactly one consumer. A stream has no length: train it with the
  iteration-based runner (``run.runner: runner_iter``, ``run.max_iters``).
"""

from __future__ import annotations

import io
import json
import logging
import random
from typing import Any, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import IterableDataset

from lavislite.common.errors import DataError
from lavislite.datasets.annotations import Field
from lavislite.datasets.datasets.base_dataset import _identity, collate_dicts
from lavislite.datasets.datasets.caption_datasets import ImageTextTrainDataset

logger = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTS = ("txt", "json")


class PretrainJsonDataset(ImageTextTrainDataset):
    """``{"image", "text_input", "image_id", "instance_id"}``, one sample per caption."""

    FIELDS = (Field("image", "str"), Field("caption", "str_or_str_list"), Field("image_id", "str_or_int", required=False))


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """``"dir/{000..009}.tar"`` (brace notation) or a list of such patterns -> the shard paths."""
    from webdataset.shardlists import expand_urls

    specs = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for s in specs:
        out.extend(expand_urls(str(s)))
    return out


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class WebDatasetPretrain(IterableDataset):
    """Streams ``{"image", "text_input", "image_id", "instance_id"}`` from tar shards (see module doc)."""

    def __init__(
        self,
        shards: str | Sequence[str],
        vis_processor: Any = None,
        text_processor: Any = None,
        *,
        skip_bad_samples: bool = False,
        shuffle_buffer: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        self.shards = expand_shards(shards)
        if not self.shards:
            raise DataError(f"no webdataset shards match {shards!r}; check build_info.shards")
        self.vis_processor = vis_processor or _identity
        self.text_processor = text_processor or _identity
        self.skip_bad_samples = bool(skip_bad_samples)
        self.shuffle_buffer = int(shuffle_buffer)
        self.rank, self.world_size = rank, world_size
        self._skipped = torch.zeros(1, dtype=torch.long).share_memory_()

    @property
    def num_skipped(self) -> int:
        """Samples (or unreadable shards) skipped so far, across DataLoader workers."""
        return int(self._skipped.item())

    def consumer(self) -> tuple[int, int]:
        """(this reader's id, number of readers) over ranks x DataLoader workers."""
        rank, world = _dist_rank_world()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * nw + wid, world * nw

    def _handler(self, exc: Exception) -> bool:
        if not self.skip_bad_samples:
            raise DataError(f"webdataset: {exc}. Fix or remove the shard, or set run.skip_bad_samples=true.") from exc
        self._skipped += 1
        logger.warning("skipping unreadable webdataset data: %s", exc)
        return True

    def _decode(self, raw: dict) -> list[dict]:
        key, url = raw.get("__key__"), raw.get("__url__")
        where = f"{url}, sample {key!r}"
        img_ext = next((e for e in IMAGE_EXTS if e in raw), None)
        txt_ext = next((e for e in TEXT_EXTS if e in raw), None)
        if img_ext is None:
            raise DataError(f"{where}: no image member (.{'/.'.join(IMAGE_EXTS)})")
        if txt_ext is None:
            raise DataError(f"{where}: no text member (.txt or .json)")
        try:
            with Image.open(io.BytesIO(raw[img_ext])) as im:
                im.load()
                from lavislite.processors.image_processors import to_rgb

                image = to_rgb(im)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"{where}: cannot decode .{img_ext}: {exc}") from exc
        try:
            text = raw[txt_ext].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{where}: .{txt_ext} is not UTF-8 text ({exc})") from exc
        if txt_ext == "json":
            try:
                caption = json.loads(text).get("caption")
            except (json.JSONDecodeError, AttributeError) as exc:
                raise DataError(f"{where}: .json must be an object with a 'caption' ({exc})") from exc
        else:
            caption = text.strip()
        captions = [caption] if isinstance(caption, str) else caption
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) and c.strip() for c in captions):
            raise DataError(f"{where}: field 'caption' must be a non-empty string or list of strings, got {caption!r:.60}")
        pixels = self.vis_processor(image)
        return [
            {"image": pixels, "text_input": self.text_processor(c), "image_id": str(key), "instance_id": f"{url}#{key}#{i}"}
            for i, c in enumerate(captions)
        ]

    def _samples(self) -> Iterator[dict]:
        from webdataset.tariterators import tarfile_samples

        me, total = self.consumer()
        rng = random.Random(torch.initial_seed() + me)  # differs per worker, pass and run seed
        if len(self.shards) >= total:
            shards, keep_every = self.shards[me::total], None
        else:
            shards, keep_every = list(self.shards), total
        if self.shuffle_buffer > 0 and keep_every is None:  # sample-level split needs one shared order
            rng.shuffle(shards)
        raw_stream = tarfile_samples(({"url": s} for s in shards), handler=self._handler)
        for i, raw in enumerate(raw_stream):
            if keep_every is not None and i % keep_every != me:
                continue
            try:
                yield from self._decode(raw)
            except DataError as exc:
                self._handler(exc)

    def __iter__(self) -> Iterator[dict]:
        stream = self._samples()
        if self.shuffle_buffer <= 0:
            yield from stream
            return
        me, _ = self.consumer()
        rng = random.Random(torch.initial_seed() + 7919 * (me + 1))
        buf: list[dict] = []
        for sample in stream:
            buf.append(sample)
            if len(buf) >= self.shuffle_buffer:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf

    def collater(self, samples: Sequence[dict]) -> dict[str, Any]:
        return collate_dicts(samples)
