"""Data loaders for runners, and a resumable stream of training batches.

Map-style datasets get a ``DistributedSampler`` in every run (with one replica when not distributed), so
the sample order is a function of ``(run.seed, epoch)`` only; a resumed run skips the indices already
seen in the interrupted epoch without loading them. Worker seeds come from a generator seeded the
same way, never from the global RNG. Iterable datasets (webdataset) are streamed as they come; on
resume the consumed batches are read again and dropped.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, IterableDataset

from lavislite.common.errors import ConfigError

logger = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start ``skip`` indices into its epoch."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, shuffle: bool, seed: int, drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def collate_fn_of(dataset: Dataset) -> Any:
    """The dataset's own ``collater`` (through ConcatDataset too), else torch's default."""
    ds = dataset.datasets[0] if isinstance(dataset, ConcatDataset) else dataset
    return getattr(ds, "collater", None)


def merge_split(datasets: dict[str, dict[str, Dataset]], split: str, *, train: bool) -> Dataset | None:
    """The dataset of ``split`` across the configured datasets (train splits of several are concatenated)."""
    found = [(name, splits[split]) for name, splits in datasets.items() if split in splits]
    if not found:
        return None
    if len(found) == 1:
        return found[0][1]
    if not train:
        raise ConfigError(
            f"split {split!r} is provided by several datasets ({', '.join(n for n, _ in found)}); evaluation reads one "
            f"dataset per split: keep one of them in datasets:, or list the split only once"
        )
    if any(isinstance(d, IterableDataset) for _, d in found):
        raise ConfigError(f"train split {split!r}: several datasets including an iterable (webdataset) one cannot be concatenated")
    return ConcatDataset([d for _, d in found])


def build_loader(dataset: Dataset, run_cfg: Any, *, train: bool, rank: int, world_size: int) -> DataLoader:
    """A DataLoader for training (shuffled, full batches) or evaluation (dataset order, every sample)."""
    batch_size = int(run_cfg.batch_size_train if train else run_cfg.batch_size_eval)
    workers = int(run_cfg.get("num_workers", 0) or 0)
    common = dict(
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_fn_of(dataset),
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        generator=torch.Generator().manual_seed(int(run_cfg.seed)),
    )
    if isinstance(dataset, IterableDataset):
        return DataLoader(dataset, **common)
    sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=int(run_cfg.seed))
    loader = DataLoader(dataset, sampler=sampler, drop_last=train, **common)
    if train and len(loader) == 0:
        raise ConfigError(
            f"the train split has {len(dataset)} samples, fewer than run.batch_size_train={batch_size} x {world_size} "
            f"process(es): lower the batch size"
        )
    return loader


class BatchStream:
    """Training batches over consecutive passes of ``loader``, starting at a saved position.

    ``data_epoch`` / ``data_batch`` always give the position of the next batch, which is what a
    checkpoint stores.
    """

    def __init__(self, loader: DataLoader, seed: int, data_epoch: int = 0, data_batch: int = 0) -> None:
        self.loader = loader
        self.seed = int(seed)
        self.data_epoch = data_epoch
        self.data_batch = data_batch
        self._it: Iterator | None = None

    @property
    def sampler(self) -> ResumableSampler | None:
        s = self.loader.sampler
        return s if isinstance(s, ResumableSampler) else None

    def _start_pass(self) -> Iterator:
        skip = self.data_batch
        if self.loader.generator is not None:  # worker seeds: a function of (seed, pass) only
            self.loader.generator.manual_seed(self.seed + self.data_epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(self.data_epoch)
            self.sampler.skip = skip * int(self.loader.batch_size)
            return iter(self.loader)
        it = iter(self.loader)
        for _ in range(skip):  # iterable dataset: no random access; read and drop
            next(it, None)
        return it

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Any:
        for _ in range(2):
            if self._it is None:
                self._it = self._start_pass()
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                self.data_epoch += 1
                self.data_batch = 0
                continue
            self.data_batch += 1
            return batch
        raise ConfigError("the train loader yields no batches (empty dataset?)")

    def close(self) -> None:
        self._it = None
