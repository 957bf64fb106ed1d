"""Request inputs the server accepts: uploaded image bytes (size and pixel limits, decoded safely) and file
paths confined to the configured image roots. Every refusal is a :class:`RequestError` with an HTTP status
and a one-line message; nothing here touches a model."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class RequestError(Exception):
    """A 4xx answer: ``status`` and a message saying what was wrong and how to fix it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = int(status), message


@dataclass(frozen=True)
class Limits:
    """What one request may carry (``lavislite serve`` flags of the same names)."""

    max_upload_bytes: int = 10 * 2**20
    max_pixels: int = 20_000_000
    max_text_chars: int = 1000
    max_labels: int = 100
    max_k: int = 100


def decode_image(data: bytes, name: str, limits: Limits):
    """Uploaded bytes -> an RGB PIL image; 400 for empty/non-image/truncated data, 413 for too many pixels
    (checked from the header, before any pixel is decoded)."""
    from PIL import Image, UnidentifiedImageError

    from lavislite.processors.image_processors import to_rgb

    if not data:
        raise RequestError(400, f"image {name!r} is empty; upload an image file (jpeg, png, webp, ...)")
    if len(data) > limits.max_upload_bytes:
        raise RequestError(413, f"image {name!r} is {len(data)} bytes, over the {limits.max_upload_bytes}-byte limit (--max-upload-mb)")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RequestError(400, f"{name!r} is not an image PIL can read; upload a jpeg, png, webp, bmp, gif or tiff file") from None
    except OSError as exc:
        raise RequestError(400, f"cannot read image {name!r}: {exc}") from None
    w, h = im.size
    if w * h > limits.max_pixels:
        raise RequestError(413, f"image {name!r} is {w}x{h} = {w * h / 1e6:.1f} megapixels, over the limit of "
                                f"{limits.max_pixels / 1e6:g} (--max-megapixels); resize it")
    try:
        im.load()
        return to_rgb(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(400, f"image {name!r} is truncated or corrupt ({exc}); upload the complete file") from None


def resolve_in_roots(path: str, roots: Sequence[Path]) -> Path:
    """A request's relative ``path`` -> the real file inside one of ``roots``.

    Refused (403) before touching the file system: absolute paths, ``..`` parts, NUL bytes. After resolving
    symlinks the file must still lie inside the root it was found under (a link out of the root is 403)."""
    if not roots:
        raise RequestError(403, "this server reads no files by path (start it with --image-root DIR); upload the image instead")
    if not isinstance(path, str) or not path or "\x00" in path:
        raise RequestError(400, "path is empty or malformed; give a path relative to an image root")
    p = Path(path)
    if p.is_absolute() or path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        raise RequestError(403, f"path {path!r} is absolute; give a path relative to an image root")
    if ".." in p.parts or ".." in Path(path.replace("\\", "/")).parts:
        raise RequestError(403, f"path {path!r} climbs out of the image roots ('..'); give a path inside one")
    for root in roots:
        real_root = Path(os.path.realpath(root))
        candidate = real_root / p
        if not os.path.lexists(candidate):
            continue
        real = Path(os.path.realpath(candidate))
        if real != real_root and real_root not in real.parents:
            raise RequestError(403, f"path {path!r} is a link out of the image roots; refusing to read it")
        if not real.is_file():
            raise RequestError(400, f"path {path!r} is not a file")
        return real
    raise RequestError(404, f"path {path!r} is in no image root")


def read_path(path: str, roots: Sequence[Path], limits: Limits):
    """The image at ``path`` under the roots, with the upload limits."""
    real = resolve_in_roots(path, roots)
    size = real.stat().st_size
    if size > limits.max_upload_bytes:
        raise RequestError(413, f"{path!r} is {size} bytes, over the {limits.max_upload_bytes}-byte limit (--max-upload-mb)")
    return decode_image(real.read_bytes(), path, limits)


def check_text(value: object, field: str, limits: Limits, *, required: bool = True) -> str:
    """A stripped text field: 422 when missing/empty (if required) or longer than ``max_text_chars``."""
    text = "" if value is None else str(value).strip()
    if not text:
        if required:
            raise RequestError(422, f"{field} is empty; send a non-empty {field}")
        return ""
    if len(text) > limits.max_text_chars:
        raise RequestError(422, f"{field} is {len(text)} characters, over the limit of {limits.max_text_chars} (--max-text-chars)")
    return text
