"""The shared base of every map-style dataset: "media files + a list of annotation records".

A dataset holds a validated :class:`~lavislite.datasets.annotations.AnnotationTable`, a visual and a
text processor, and the media root that relative paths in the records are joined to. ``__getitem__``
wraps the subclass's ``get_sample``: a DataError (missing/corrupt image, a text that is empty after
cleaning) is re-raised naming the annotation file and record, or, with ``skip_bad_samples``, the next
valid sample (index + 1, + 2, ... wrapping around) is returned instead and the bad index is counted.

The bad-index flags live in shared memory, so skips that happen inside DataLoader worker processes
are counted in the main process too (``num_skipped``); each bad sample counts once however often it is
hit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from lavislite.common.errors import DataError
from lavislite.datasets.annotations import AnnotationTable

logger = logging.getLogger(__name__)

Processor = Callable[[Any], Any]


def _identity(x: Any) -> Any:
    return x


def collate_dicts(samples: Sequence[dict], *, long_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Stack tensor fields, turn ``long_keys`` into long tensors, keep everything else as lists."""
    if not samples:
        raise DataError("collater got an empty batch")
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values, dim=0)
        elif key in long_keys:
            out[key] = torch.tensor(values, dtype=torch.long)
        else:
            out[key] = values
    return out


class BaseDataset(Dataset):
    """Media + annotation records; subclasses implement ``get_sample(i)`` (and may flatten records)."""

    def __init__(
        self,
        table: AnnotationTable,
        vis_processor: Processor | None = None,
        text_processor: Processor | None = None,
        media_root: str | Path | None = None,
        skip_bad_samples: bool = False,
    ) -> None:
        self.table = table
        self.annotation = table.records  # LAVIS name
        self.vis_processor = vis_processor or _identity
        self.text_processor = text_processor or _identity
        self.media_root = Path(media_root) if media_root is not None else None
        self.skip_bad_samples = bool(skip_bad_samples)
        self._bad: torch.Tensor | None = None

    # -- what the subclass provides ----------------------------------------------------------
    FIELDS: tuple = ()  # the record schema (lavislite.datasets.annotations.Field), checked on load

    @classmethod
    def check_record(cls, record: dict) -> tuple[str, str] | None:
        """A dataset-specific check beyond ``FIELDS``: ``(field, problem)`` or None."""
        return None

    def __len__(self) -> int:
        return len(self.table.records)

    def record_of(self, index: int) -> int:
        """The annotation record behind sample ``index`` (identity unless the subclass flattens)."""
        return index

    def get_sample(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared pieces -----------------------------------------------------------------------
    def where(self, index: int) -> str:
        """``"<annotation file>, record <n>"`` for sample ``index``."""
        return self.table.where(self.record_of(index))

    def media_path(self, rel: str) -> Path:
        """``rel`` joined to the media root (absolute paths are kept as they are)."""
        p = Path(rel).expanduser()
        if p.is_absolute() or self.media_root is None:
            return p
        return self.media_root / p

    def load_image(self, rel: str) -> Image.Image:
        """The RGB PIL image at ``rel`` (DataError naming the file when missing or unreadable)."""
        from lavislite.processors.image_processors import load_image

        return load_image(self.media_path(rel))

    def process_image(self, rel: str) -> Any:
        return self.vis_processor(self.load_image(rel))

    def _flags(self) -> torch.Tensor:
        if self._bad is None or self._bad.numel() != len(self):
            # Shared memory: DataLoader workers (fork or spawn) write into the main process's flags.
            self._bad = torch.zeros(len(self), dtype=torch.bool).share_memory_()
        return self._bad

    def prepare_for_workers(self) -> None:
        """Allocate the shared skip flags now (done lazily otherwise; call before forking workers)."""
        if self.skip_bad_samples and len(self):
            self._flags()

    @property
    def num_skipped(self) -> int:
        """Bad records skipped when loading + bad samples skipped while reading (each counted once)."""
        runtime = int(self._bad.sum()) if self._bad is not None else 0
        return self.table.num_skipped + runtime

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {n} samples")
        if not self.skip_bad_samples:
            try:
                return self.get_sample(index)
            except DataError as exc:
                raise DataError(f"{self.where(index)}: {exc} Fix or remove the record, or set run.skip_bad_samples=true.") from exc
        flags = self._flags()
        for step in range(n):
            j = (index + step) % n
            if bool(flags[j]):
                continue
            try:
                return self.get_sample(j)
            except DataError as exc:
                flags[j] = True
                logger.warning("skipping a bad sample (%s): %s", self.where(j), exc)
        raise DataError(
            f"{type(self).__name__}: every one of the {n} samples is bad (first: {self.table.files[0] if self.table.files else '?'}); check the "
            "media root and the files"
        )

    def collater(self, samples: Sequence[dict]) -> dict[str, Any]:
        return collate_dicts(samples)

    def __repr__(self) -> str:
        files = ", ".join(str(f) for f in self.table.files)
        return f"{type(self).__name__}({len(self)} samples from {files or '-'}; media root {self.media_root})"
