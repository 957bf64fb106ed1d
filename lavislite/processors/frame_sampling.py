"""Which frames of a video to read: pure index arithmetic, no I/O.

Strategies (``T`` = ``num_frames``, ``n = end - start`` frames in the window):

- ``uniform``: BLIP's ``np.arange(0, n, n / T, dtype=int)``. numpy's integer arange takes its step from
  the first two values, so this is exactly ``i * floor(n / T)`` for ``i < T`` (all ``0`` when ``n < T``,
  i.e. frames repeat as in BLIP). It is *not* ``floor(i * n / T)``. For some ``T`` that are not powers of
  two (7, 11, ...) BLIP's float arange returns ``T + 1`` values; we return its first ``T``.
- ``middle``: the centre frame of each of ``T`` equal segments, ``floor((i + 0.5) * n / T)``.
- ``rand``: one uniformly random frame per equal segment (segment ``i`` = ``[i*n//T, (i+1)*n//T)``),
  so the result is sorted; a segment that is empty (``n < T``) yields its start frame.
- ``headtail``: ``T // 2`` random frames from the first half and ``T - T // 2`` from the second half,
  without replacement when a half is long enough, sorted. (LAVIS's version was a deterministic linspace
  whose last index could fall outside the video.)

Every result has ``T`` indices in ``[start, end)``.
"""

from __future__ import annotations

import numpy as np
import torch

from lavislite.common.errors import DataError

STRATEGIES = ("uniform", "middle", "rand", "headtail")
RANDOM_STRATEGIES = ("rand", "headtail")


def default_rng() -> np.random.Generator:
    """A numpy Generator seeded from torch's RNG, so ``torch.manual_seed`` (and DataLoader worker
    seeding) makes random frame sampling reproducible without a separate seed."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def sample_frame_indices(
    vlen: int,
    num_frames: int,
    strategy: str,
    *,
    start: int = 0,
    end: int | None = None,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Return ``num_frames`` frame indices in ``[start, end)`` of a ``vlen``-frame video.

    ``start``/``end`` select a window (frame numbers; convert seconds with the video's fps first);
    ``end`` defaults to ``vlen``. ``rng`` drives the random strategies (default: seeded from torch).
    Raises DataError for an empty video or window and ValueError for a bad strategy or count.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown frame sampling strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if vlen is None or vlen <= 0:
        raise DataError(f"cannot sample frames from a video with {vlen!r} frames; the file has no decodable frames")
    end = vlen if end is None else min(int(end), vlen)
    start = max(int(start), 0)
    if start >= end:
        raise DataError(
            f"empty frame window [start={start}, end={end}) in a {vlen}-frame video; "
            f"check start_time/end_time against the video's length"
        )
    n, t = end - start, int(num_frames)
    if strategy == "uniform":
        idx = np.arange(t) * (n // t)
    elif strategy == "middle":
        idx = np.floor((np.arange(t) + 0.5) * n / t).astype(np.int64)
    elif strategy == "rand":
        idx = _one_per_segment(n, t, rng or default_rng())
    else:
        idx = _headtail(n, t, rng or default_rng())
    return [start + int(i) for i in idx]


def _one_per_segment(n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    bounds = (np.arange(t + 1) * n) // t
    lo, hi = bounds[:-1], np.maximum(bounds[1:], bounds[:-1] + 1)
    return rng.integers(lo, hi)


def _pick_sorted(lo: int, hi: int, k: int, rng: np.random.Generator) -> np.ndarray:
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    replace = (hi - lo) < k
    return np.sort(rng.choice(np.arange(lo, hi), size=k, replace=replace))


def _headtail(n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    mid = n // 2
    head = _pick_sorted(0, max(mid, 1), t // 2, rng)  # a 1-frame video has an empty first half
    tail = _pick_sorted(mid, n, t - t // 2, rng)
    return np.concatenate([head, tail])
