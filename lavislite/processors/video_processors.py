"""BLIP video processors: video path -> float tensor (T, 3, S, S), normalised like images.

As in BLIP's zero-shot video retrieval: decord resizes frames straight to S x S, ``num_frames`` indices
are sampled (``uniform`` = ``i * floor(vlen / T)``), and BLIP's ``ImageNorm`` divides by 255 and applies
the CLIP mean/std. The train processor samples frames at random and may flip the whole clip.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry
from lavislite.processors.base_processor import BaseProcessor
from lavislite.processors.frame_sampling import STRATEGIES
from lavislite.processors.image_processors import CLIP_MEAN, CLIP_STD
from lavislite.processors.video_io import BACKENDS, read_frames

DETERMINISTIC_STRATEGIES = ("uniform", "middle")


class BlipVideoBaseProcessor(BaseProcessor):
    """Shared by eval and train: option checks, reading and normalisation."""

    allowed_strategies: Sequence[str] = STRATEGIES

    def __init__(
        self,
        num_frames: int,
        image_size: int,
        strategy: str,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        backend: str,
        horizontal_flip: bool,
    ) -> None:
        name = type(self).__name__
        for key, value in (("num_frames", num_frames), ("image_size", image_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: {key} must be a positive int, got {value!r}")
        if strategy not in self.allowed_strategies:
            raise ConfigError(f"{name}: strategy must be one of {', '.join(self.allowed_strategies)}, got {strategy!r}")
        if backend not in BACKENDS:
            raise ConfigError(f"{name}: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        mean = tuple(CLIP_MEAN if mean is None else mean)
        std = tuple(CLIP_STD if std is None else std)
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ConfigError(f"{name}: mean and std need 3 values each (std > 0), got mean={mean}, std={std}")
        self.num_frames, self.image_size, self.strategy, self.backend = num_frames, image_size, strategy, backend
        self.horizontal_flip = horizontal_flip
        self.mean, self.std = mean, std
        self._mean = torch.tensor(mean).view(1, 3, 1, 1)
        self._std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, path: str | os.PathLike, start_time: float | None = None, end_time: float | None = None) -> torch.Tensor:
        frames = read_frames(
            path,
            (self.num_frames, self.strategy),
            size=self.image_size,
            start_time=start_time,
            end_time=end_time,
            backend=self.backend,
        )
        return self.transform(frames)

    def transform(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (T, 3, S, S) -> normalised float (T, 3, S, S), flipped as a whole clip if enabled."""
        if self.horizontal_flip and torch.rand(()).item() < 0.5:
            frames = frames.flip(-1)
        return (frames.float().div_(255.0) - self._mean) / self._std

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_frames={self.num_frames}, image_size={self.image_size}, "
            f"strategy={self.strategy!r}, backend={self.backend!r}, horizontal_flip={self.horizontal_flip})"
        )


@registry.register_processor("blip_video_eval")
class BlipVideoEvalProcessor(BlipVideoBaseProcessor):
    """Deterministic frames (``uniform`` as in BLIP, or ``middle``), no augmentation."""

    allowed_strategies = DETERMINISTIC_STRATEGIES

    def __init__(
        self,
        num_frames: int = 8,
        image_size: int = 384,
        strategy: str = "uniform",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(num_frames, image_size, strategy, mean, std, backend, horizontal_flip=False)


@registry.register_processor("blip_video_train")
class BlipVideoTrainProcessor(BlipVideoBaseProcessor):
    """Random frames (``rand``: one per equal segment, or ``headtail``) and an optional whole-clip flip.
    Randomness comes from torch's RNG, so ``torch.manual_seed`` makes it repeatable."""

    def __init__(
        self,
        num_frames: int = 8,
        image_size: int = 384,
        strategy: str = "rand",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        backend: str = "auto",
        horizontal_flip: bool = True,
    ) -> None:
        super().__init__(num_frames, image_size, strategy, mean, std, backend, horizontal_flip)
