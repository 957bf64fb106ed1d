"""Datasets for batch inference that never raise inside a DataLoader worker.

A worker's exception reaches the main process wrapped in a multi-line traceback; instead each sample is
either ``{"id", "path", <key>: tensor}`` or ``{"id", "error": message}``, and the runner decides (fail with
the message, or skip and count). :func:`collate` separates the two.
"""

from __future__ import annotations

import io
import logging
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from lavislite.common.errors import DataError, LavisliteError
from lavislite.inference.inputs import IMAGE_EXTS, Item

logger = logging.getLogger(__name__)


class ItemsDataset(Dataset):
    """``load(item.path) -> tensor`` for each item, stored under ``key`` (``image`` or ``video``)."""

    def __init__(self, items: Sequence[Item], load: Callable[[str], torch.Tensor], key: str = "image") -> None:
        self.items = list(items)
        self.load = load
        self.key = key

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        try:
            return {"id": item.id, "path": item.path, "index": index, self.key: self.load(item.path)}
        except (LavisliteError, OSError, ValueError, RuntimeError) as exc:
            return {"id": item.id, "path": item.path, "index": index, "error": _one_line(exc)}


class ShardImageDataset(IterableDataset):
    """Images streamed from webdataset tar shards, ``id = "<shard>#<key>"``.

    Readers are ranks x DataLoader workers: with at least as many shards as readers each reader takes
    whole shards (``shards[me::n]``), otherwise every reader walks all shards and keeps every n-th sample.
    Either way each sample goes to exactly one reader. Ids in ``done`` are skipped before decoding.
    """

    def __init__(self, shards: Sequence[str], process: Callable[[Any], torch.Tensor], *, done: set[str] | None = None,
                 rank: int = 0, world: int = 1) -> None:
        super().__init__()
        self.shards = list(shards)
        self.process = process
        self.done = set(done or ())
        self.rank, self.world = int(rank), int(world)

    def _reader(self) -> tuple[int, int]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * nw + wid, self.world * nw

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from webdataset.tariterators import tarfile_samples

        me, n = self._reader()
        if len(self.shards) >= n:
            shards, every = self.shards[me::n], None
        else:
            shards, every = self.shards, n
        errors: list[str] = []

        def handler(exc: Exception) -> bool:
            errors.append(_one_line(exc))
            return True

        for i, raw in enumerate(tarfile_samples(({"url": s} for s in shards), handler=handler)):
            while errors:
                msg = errors.pop(0)
                yield {"id": f"shard-error:{msg[:80]}", "path": "", "error": f"webdataset: {msg}"}
            if every is not None and i % every != me:
                continue
            sid = f"{raw.get('__url__')}#{raw.get('__key__')}"
            if sid in self.done:
                continue
            ext = next((e for e in (x.lstrip(".") for x in IMAGE_EXTS) if e in raw), None)
            if ext is None:
                yield {"id": sid, "path": sid, "error": f"{sid}: no image member (.{', .'.join(x.lstrip('.') for x in IMAGE_EXTS)})"}
                continue
            try:
                yield {"id": sid, "path": sid, "image": self.process(_decode_image(raw[ext], sid))}
            except (LavisliteError, OSError, ValueError) as exc:
                yield {"id": sid, "path": sid, "error": _one_line(exc)}
        for msg in errors:
            yield {"id": f"shard-error:{msg[:80]}", "path": "", "error": f"webdataset: {msg}"}


def _decode_image(data: bytes, where: str):
    from PIL import Image

    from lavislite.processors.image_processors import to_rgb

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return to_rgb(im)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {where}: {exc}. The member is corrupt or not an image.") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, LavisliteError) else f"{type(exc).__name__}: {text}"


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good samples' tensors; unreadable ones go to ``batch["bad"]`` as ``(id, message)``."""
    good = [s for s in samples if "error" not in s]
    batch: dict[str, Any] = {
        "id": [s["id"] for s in good],
        "path": [s["path"] for s in good],
        "bad": [(s["id"], s["error"]) for s in samples if "error" in s],
    }
    for key in ("image", "video"):
        if good and key in good[0]:
            batch[key] = torch.stack([s[key] for s in good])
    if good and "index" in good[0]:
        batch["index"] = [s["index"] for s in good]
    return batch
