"""Small helpers the whole package shares: which device to use, where a model lives, and writing a file
atomically.

One implementation each, so a fix (an fsync, a device rule) reaches every caller.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from lavislite.common.errors import ConfigError

__all__ = ["atomic_write", "device_of", "json_default", "resolve_device", "write_json"]


def resolve_device(name: str | None, *, what: str = "run.device") -> torch.device:
    """The device a setting names: ``auto`` (or empty) = this process's GPU when CUDA is available, else the
    CPU. "This process's GPU" is ``LOCAL_RANK`` (torchrun sets it; 0 otherwise), also for a bare ``cuda``.
    ``what`` names the setting in the error for an unusable value."""
    name = str(name or "auto")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        return torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"{what}={name!r} is not a device; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{what}={name!r} but CUDA is not available here; use auto or cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    return device


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in ``path``'s directory; on success fsync it and ``os.replace`` it onto ``path``.

    On any exception the temp file is removed and ``path`` is left as it was, so a reader never sees
    a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # make the rename itself durable (best effort: not every filesystem allows fsync on a dir)
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def json_default(v: Any) -> Any:
    """``json.dump``'s fallback for tensors, numpy scalars and anything else (its ``str``)."""
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return str(v)


def write_json(path: str | os.PathLike, data: Any, *, indent: int | None = None) -> Path:
    """Write ``data`` as JSON through :func:`atomic_write` (a reader never sees half a file)."""
    path = Path(path)
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent, default=json_default)
    return path
