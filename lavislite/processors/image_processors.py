"""BLIP image processors: PIL image or file path -> normalised float tensor (3, S, S).

``blip_image_eval`` reproduces BLIP's eval transform exactly (PIL bicubic resize to a square, no crop,
aspect not kept); ``blip_image_train`` is BLIP's train transform (RandomResizedCrop, flip, RandomAugment).
All randomness comes from torch's RNG, so ``torch.manual_seed`` makes the train transform repeatable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.processors.base_processor import BaseProcessor
from lavislite.processors.randaugment import BLIP_AUGMENTS, RandomAugment

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ImageInput = Union[Image.Image, str, os.PathLike]


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB.

    Like BLIP's ``.convert("RGB")`` (alpha is dropped, not composited), except for high-bit-depth
    modes, which PIL would clip to 255: 16-bit (``I;16*``, and ``I`` holding values above 255) is
    scaled by 255/65535, and float ``F`` in [0, 1] by 255 (other float images are clipped).
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        arr = np.asarray(image).astype(np.float64)
        if image.mode == "F":
            arr = arr * 255.0 if arr.size and np.nanmax(arr) <= 1.0 else arr
        elif image.mode.startswith("I;16") or (arr.size and arr.max() > 255):
            arr = arr * (255.0 / 65535.0)
        gray = np.nan_to_num(np.rint(arr)).clip(0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns when a palette with transparency goes straight to RGB
    return image.convert("RGB")


def load_image(item: ImageInput) -> Image.Image:
    """Return ``item`` as an RGB PIL image; ``item`` is a PIL image or a path to an image file.

    PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) stays in force.
    """
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if not isinstance(item, (str, os.PathLike)):
        raise DataError(f"expected a PIL image or an image file path, got {type(item).__name__}: {item!r:.80}")
    path = Path(item)
    if not path.is_file():
        raise DataError(f"image file not found: {path}. Check the path (and the dataset's image root).")
    try:
        with Image.open(path) as img:
            img.load()  # Image.open is lazy: decode now so truncated files fail here, naming the file
            return to_rgb(img)
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{path}: refused as a possible decompression bomb ({exc}). Raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted."
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: {exc}. The file is corrupt or not an image.") from exc


class BlipImageBaseProcessor(BaseProcessor):
    """Shared pieces: image loading and CLIP-statistics normalisation."""

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        mean = tuple(CLIP_MEAN if mean is None else mean)
        std = tuple(CLIP_STD if std is None else std)
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ConfigError(f"{type(self).__name__}: mean and std need 3 values each (std > 0), got mean={mean}, std={std}")
        self.mean, self.std = mean, std
        self.normalize = transforms.Normalize(mean, std)

    def __call__(self, item: ImageInput) -> torch.Tensor:
        return self.transform(load_image(item))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(\n  {self.transform}\n)"


def _check_size(image_size: int, owner: str) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"{owner}: image_size must be a positive int, got {image_size!r}")
    return image_size


@registry.register_processor("blip_image_eval")
class BlipImageEvalProcessor(BlipImageBaseProcessor):
    """PIL ``Resize((S, S), BICUBIC)`` -> ToTensor -> Normalize (BLIP's eval transform, exactly)."""

    def __init__(self, image_size: int = 384, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(mean, std)
        self.image_size = _check_size(image_size, type(self).__name__)
        self.transform = transforms.Compose(
            [
                transforms.Resize((image_size, image_size), interpolation=InterpolationMode.BICUBIC),
                transforms.ToTensor(),
                self.normalize,
            ]
        )


@registry.register_processor("blip_image_train")
class BlipImageTrainProcessor(BlipImageBaseProcessor):
    """RandomResizedCrop(S, (min_scale, max_scale), bicubic) -> HFlip -> RandomAugment(2, 5) -> ToTensor
    -> Normalize (BLIP's train transform; min_scale 0.5 for fine-tuning, 0.2 for pre-training).

    ``horizontal_flip=False`` drops the flip, for data whose text names left and right (as
    ``blip_video_train``'s option of the same name)."""

    def __init__(
        self,
        image_size: int = 384,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        min_scale: float = 0.5,
        max_scale: float = 1.0,
        randaugment: bool = True,
        horizontal_flip: bool = True,
    ) -> None:
        super().__init__(mean, std)
        self.image_size = _check_size(image_size, type(self).__name__)
        if not 0 < min_scale <= max_scale <= 1:
            raise ConfigError(f"{type(self).__name__}: need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
        steps = [
            transforms.RandomResizedCrop(image_size, scale=(min_scale, max_scale), interpolation=InterpolationMode.BICUBIC),
        ]
        if horizontal_flip:
            steps.append(transforms.RandomHorizontalFlip())
        if randaugment:
            steps.append(RandomAugment(2, 5, augs=BLIP_AUGMENTS))
        self.transform = transforms.Compose(steps + [transforms.ToTensor(), self.normalize])
