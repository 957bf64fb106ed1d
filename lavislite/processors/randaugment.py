"""BLIP's RandomAugment (the ALBEF/UNITER RandAugment) on top of torchvision's functional ops.

``RandomAugment(N, M, augs)`` samples ``N`` op names from ``augs`` *with replacement*; each is then applied
with probability 0.5 at level ``M`` (``MAX_LEVEL`` = 10). Geometric ops fill uncovered pixels with
``fill`` = (128, 128, 128) and interpolate bilinearly, as BLIP's cv2 version does.

Magnitude per level (``M / 10`` scaled; the value at BLIP's ``M = 5`` in brackets):

============================  =================================================  ===================
op                            argument                                           at M = 5
============================  =================================================  ===================
Identity, AutoContrast,       none (AutoContrast: per-channel min/max stretch;
Equalize                      Equalize: PIL's histogram equalisation)
Brightness, Sharpness,        enhance factor ``M/10 * 1.8 + 0.1``                1.0 (= no change!)
Color, Contrast
ShearX, ShearY                shear ``±M/10 * 0.3`` (``x' = x + s*y``, origin    ±0.15 (≈ 8.53°)
                              at the top-left pixel)
TranslateX, TranslateY        ``±M/10 * 10`` pixels (absolute, not a fraction)   ±5 px
Rotate                        ``±M/10 * 30`` degrees about the image centre      ±15°
Solarize                      threshold ``int(M/10 * 256)``                      128
Posterize                     bits kept ``max(1, int(M/10 * 4))``                2
============================  =================================================  ===================

So with BLIP's settings Brightness and Sharpness are no-ops: that is BLIP's behaviour, kept on purpose.
The sign of shear/translate/rotate is random (p = 0.5).

Differences from BLIP's cv2 code: randomness comes from torch's RNG (``torch.manual_seed`` makes it
repeatable) instead of numpy's global one; the ops run on PIL images through torchvision, which agrees
with the cv2 warps to well under one grey level on average (they differ only in border anti-aliasing);
the result is a PIL image rather than an HWC uint8 array (``ToTensor`` gives the same tensor).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

MAX_LEVEL = 10
TRANSLATE_CONST = 10
FILL = (128, 128, 128)

BLIP_AUGMENTS = (
    "Identity",
    "AutoContrast",
    "Brightness",
    "Sharpness",
    "Equalize",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
)


def _signed(value: float) -> float:
    return -value if torch.rand(()).item() < 0.5 else value


def _enhance_factor(level: float) -> float:
    return level / MAX_LEVEL * 1.8 + 0.1


def _shear(img: Image.Image, level: float, fill: Sequence[int], axis: int) -> Image.Image:
    s = _signed(level / MAX_LEVEL * 0.3)
    # torchvision's shear angle a maps x' = x - tan(a) * y; cv2's matrix in BLIP is x' = x + s * y.
    angle = -math.degrees(math.atan(s))
    shear = [angle, 0.0] if axis == 0 else [0.0, angle]
    # PIL pixel centres sit at +0.5: centre (0.5, 0.5) is cv2's origin, the top-left pixel.
    return F.affine(img, 0.0, [0, 0], 1.0, shear, interpolation=InterpolationMode.BILINEAR, fill=list(fill), center=[0.5, 0.5])


def _translate(img: Image.Image, level: float, fill: Sequence[int], axis: int) -> Image.Image:
    offset = _signed(level / MAX_LEVEL * TRANSLATE_CONST)
    shift = [offset, 0.0] if axis == 0 else [0.0, offset]
    return F.affine(img, 0.0, shift, 1.0, [0.0, 0.0], interpolation=InterpolationMode.BILINEAR, fill=list(fill))


def _rotate(img: Image.Image, level: float, fill: Sequence[int]) -> Image.Image:
    degrees = _signed(level / MAX_LEVEL * 30)
    w, h = img.size
    centre = [w / 2 + 0.5, h / 2 + 0.5]  # cv2's (W/2, H/2) in pixel indices, in PIL coordinates
    return F.rotate(img, degrees, interpolation=InterpolationMode.BILINEAR, fill=list(fill), center=centre)


Op = Callable[[Image.Image, float, Sequence[int]], Image.Image]

OPS: dict[str, Op] = {
    "Identity": lambda img, level, fill: img,
    "AutoContrast": lambda img, level, fill: F.autocontrast(img),
    "Equalize": lambda img, level, fill: F.equalize(img),
    "Brightness": lambda img, level, fill: F.adjust_brightness(img, _enhance_factor(level)),
    "Sharpness": lambda img, level, fill: F.adjust_sharpness(img, _enhance_factor(level)),
    "Color": lambda img, level, fill: F.adjust_saturation(img, _enhance_factor(level)),
    "Contrast": lambda img, level, fill: F.adjust_contrast(img, _enhance_factor(level)),
    "Solarize": lambda img, level, fill: F.solarize(img, int(level / MAX_LEVEL * 256)),
    # below level 2.5 the original keeps 0 bits (a black image); PIL needs at least 1
    "Posterize": lambda img, level, fill: F.posterize(img, max(1, int(level / MAX_LEVEL * 4))),
    "ShearX": lambda img, level, fill: _shear(img, level, fill, 0),
    "ShearY": lambda img, level, fill: _shear(img, level, fill, 1),
    "TranslateX": lambda img, level, fill: _translate(img, level, fill, 0),
    "TranslateY": lambda img, level, fill: _translate(img, level, fill, 1),
    "Rotate": lambda img, level, fill: _rotate(img, level, fill),
}


class RandomAugment:
    """Apply ``N`` ops drawn with replacement from ``augs`` (default: all of ``OPS``), each with p = 0.5,
    at level ``M``. Takes and returns a PIL RGB image (an HWC uint8 array is accepted too)."""

    def __init__(self, N: int = 2, M: float = 10, augs: Sequence[str] | None = None, fill: Sequence[int] = FILL, p: float = 0.5) -> None:
        augs = list(augs) if augs else list(OPS)
        unknown = [a for a in augs if a not in OPS]
        if unknown:
            raise ValueError(f"RandomAugment: unknown op(s) {unknown}; available: {', '.join(OPS)}")
        if not 0 <= M <= MAX_LEVEL:
            raise ValueError(f"RandomAugment: level M must be in [0, {MAX_LEVEL}], got {M}")
        self.N, self.M, self.augs, self.fill, self.p = int(N), M, augs, tuple(fill), p

    def __call__(self, img: Image.Image | np.ndarray) -> Image.Image:
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        chosen = torch.randint(len(self.augs), (self.N,)).tolist()
        for i in chosen:
            if torch.rand(()).item() > self.p:
                continue
            img = OPS[self.augs[i]](img, self.M, self.fill)
        return img

    def __repr__(self) -> str:
        return f"RandomAugment(N={self.N}, M={self.M}, augs={self.augs})"
