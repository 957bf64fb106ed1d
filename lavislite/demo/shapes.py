"""Scenes of the synthetic shapes world and their pixels.

A scene graph is a tuple of objects (colour, shape, size, position slot) in a fixed reading order;
a video is a tuple of moving objects (colour, shape, size, direction). This module samples them and
draws them (PIL, supersampled for smooth edges, with jitter and noise so no two images are equal);
the words about them live in :mod:`lavislite.demo.world`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from lavislite.common.errors import DataError

# Well separated in RGB so a tiny model sees them after JPEG at 64 px.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 185, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (165, 65, 215),
    "white": (235, 235, 235),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
SIZES: dict[str, float] = {"small": 0.085, "large": 0.14}  # half-extent as a fraction of the image side
# Slots in reading order (top, left, center, right, bottom); captions list objects in this order.
POSITIONS: dict[str, tuple[float, float]] = {
    "top": (0.5, 0.19),
    "left": (0.19, 0.5),
    "center": (0.5, 0.5),
    "right": (0.81, 0.5),
    "bottom": (0.5, 0.81),
}
DIRECTIONS: dict[str, tuple[float, float]] = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}

_BACKGROUND = (32, 32, 38)
_SUPERSAMPLE = 2
_POSITION_JITTER = 0.02  # keeps neighbouring large shapes (almost) apart
_OBJECT_COUNTS = (1, 2, 2, 3, 3)  # 20% one object, 40% two, 40% three


@dataclass(frozen=True, order=True)
class Obj:
    """One object of a still scene."""

    color: str
    shape: str
    size: str
    position: str


@dataclass(frozen=True, order=True)
class Mover:
    """One object of a video, moving from near the centre towards ``direction``."""

    color: str
    shape: str
    size: str
    direction: str


Scene = tuple[Obj, ...]
Clip = tuple[Mover, ...]


def canonical(objects: Iterable[Obj]) -> Scene:
    """Objects in reading order of their position slots (each slot holds at most one object)."""
    order = list(POSITIONS)
    return tuple(sorted(objects, key=lambda o: order.index(o.position)))


def canonical_clip(movers: Iterable[Mover]) -> Clip:
    order = list(DIRECTIONS)
    return tuple(sorted(movers, key=lambda m: order.index(m.direction)))


def sample_scene(rng: random.Random, exclude: frozenset[tuple[str, str, str]] = frozenset()) -> Scene:
    """A random scene of 1-3 objects in distinct slots, avoiding (color, shape, position) triples in ``exclude``."""
    n = rng.choice(_OBJECT_COUNTS)
    slots = rng.sample(list(POSITIONS), n)
    objects = []
    for position in slots:
        while True:
            color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
            if (color, shape, position) not in exclude:
                break
        objects.append(Obj(color, shape, rng.choice(list(SIZES)), position))
    return canonical(objects)


def sample_clip(rng: random.Random) -> Clip:
    """One object moving any way, or two distinct-looking objects moving apart along one axis."""
    if rng.random() < 0.4:
        directions = [rng.choice(list(DIRECTIONS))]
    else:
        directions = list(rng.choice((("left", "right"), ("up", "down"))))
    looks: list[tuple[str, str, str]] = []
    while len(looks) < len(directions):
        look = (rng.choice(list(COLORS)), rng.choice(SHAPES), rng.choice(list(SIZES)))
        if look not in looks:
            looks.append(look)
    return canonical_clip(Mover(c, s, z, d) for (c, s, z), d in zip(looks, directions))


# -- drawing ------------------------------------------------------------------------------------
def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple[int, ...]) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = 0.86 * r  # about the circle's area
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - 1.1 * r), (cx - 1.05 * r, cy + 0.75 * r), (cx + 1.05 * r, cy + 0.75 * r)], fill=fill)
    elif shape == "cross":
        w = 0.36 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        raise DataError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")


@dataclass(frozen=True)
class _Look:
    """How one object is drawn in one image or video: jittered colour and size."""

    rgb: tuple[int, int, int]
    shape: str
    radius: float  # fraction of the side


def _jitter_look(color: str, shape: str, size: str, rng: np.random.Generator) -> _Look:
    rgb = np.clip(np.array(COLORS[color]) + rng.integers(-15, 16, 3), 0, 255)
    radius = SIZES[size] * float(rng.uniform(0.92, 1.08))
    return _Look(tuple(int(v) for v in rgb), shape, radius)


def _background(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.array(_BACKGROUND) + rng.integers(-10, 11, 3), 0, 255))


def _render(placed: Sequence[tuple[_Look, float, float]], background: tuple[int, int, int], size: int,
            rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 array (size, size, 3) with each look drawn at its (x, y) fraction of the side."""
    big = size * _SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(canvas)
    for look, x, y in placed:
        _draw_shape(draw, look.shape, x * big, y * big, look.radius * big, look.rgb)
    small = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.int16)
    noise = rng.normal(0.0, 4.0, small.shape).round().astype(np.int16)
    return np.clip(small + noise, 0, 255).astype(np.uint8)


def render_scene(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw a still scene: each object in its slot with a little position, size and colour jitter."""
    background = _background(rng)
    placed = []
    for obj in scene:
        x, y = POSITIONS[obj.position]
        dx, dy = rng.uniform(-_POSITION_JITTER, _POSITION_JITTER, 2)
        placed.append((_jitter_look(obj.color, obj.shape, obj.size, rng), x + float(dx), y + float(dy)))
    return Image.fromarray(_render(placed, background, size, rng))


def _path(clip: Clip, mover: Mover) -> tuple[tuple[float, float], tuple[float, float]]:
    """Start and end of a mover: from near the centre to its direction's side slot."""
    dx, dy = DIRECTIONS[mover.direction]
    # Two movers go apart along one axis: start them apart so they never overlap.
    offset = 0.09 if len(clip) > 1 else 0.0
    start = (0.5 + dx * offset, 0.5 + dy * offset)
    end = (0.5 + dx * 0.31, 0.5 + dy * 0.31)
    return start, end


def render_clip(clip: Clip, size: int, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Frames (RGB uint8 arrays) of the movers travelling linearly from start to end."""
    background = _background(rng)
    looks = [_jitter_look(m.color, m.shape, m.size, rng) for m in clip]
    paths = [_path(clip, m) for m in clip]
    frames = []
    for t in range(num_frames):
        a = t / max(num_frames - 1, 1)
        placed = [(look, sx + a * (ex - sx), sy + a * (ey - sy)) for look, ((sx, sy), (ex, ey)) in zip(looks, paths)]
        frames.append(_render(placed, background, size, rng))
    return frames


def save_image(image: Image.Image, path: Path) -> None:
    """JPEG without chroma subsampling (colours survive at 64 px), or PNG, by the path's suffix."""
    if path.suffix.lower() in {".jpg", ".jpeg"}:
        image.save(path, format="JPEG", quality=95, subsampling=0)
    else:
        image.save(path, format="PNG")


def write_video(frames: Sequence[np.ndarray], path: Path, fps: int) -> None:
    """An MPEG-4 (mp4v) file that both OpenCV and decord read back frame for frame."""
    import cv2  # heavy; only needed when writing videos

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise DataError(f"OpenCV could not open {path} for writing with the mp4v codec; "
                        "check that the folder is writable and opencv-python-headless is installed")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
