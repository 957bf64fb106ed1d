"""Exception types. Every message names the thing at fault and says how to fix it."""

from __future__ import annotations

import re

# torch re-raises an exception from a DataLoader worker as ``type(msg)`` where ``msg`` is this header
# followed by the worker's whole traceback; the worker's own message is at the traceback's end.
_WORKER_HEADER = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class LavisliteError(Exception):
    """Base class of every error lavislite raises on purpose.

    Raised again in the main process by a DataLoader worker, it keeps the message it was raised with
    (one line naming the file, record and field, as with ``num_workers=0``); the worker's traceback
    stays available as ``worker_traceback``.
    """

    worker_traceback: str | None = None

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and _WORKER_HEADER.match(args[0]):
            original = _original_message(args[0], type(self))
            if original is not None:
                self.worker_traceback = args[0]
                args = (original,)
        super().__init__(*args)


def _original_message(wrapped: str, cls: type) -> str | None:
    """The message after the last ``module.Class: `` line of a formatted traceback, or None."""
    marker = f"\n{cls.__module__}.{cls.__qualname__}: "
    at = wrapped.rfind(marker)
    return wrapped[at + len(marker):].rstrip("\n") if at >= 0 else None


class ConfigError(LavisliteError, ValueError):
    """A config file, key or value is wrong (unknown key, wrong type, missing value)."""


class RegistryError(LavisliteError, KeyError):
    """A registry lookup failed or a name was registered twice."""

    def __str__(self) -> str:  # KeyError would repr() the message; show it as written
        return str(self.args[0]) if self.args else ""


class CheckpointError(LavisliteError, RuntimeError):
    """A checkpoint could not be read, is unsafe, or does not fit the model."""


class DownloadError(LavisliteError, OSError):
    """A file could not be fetched (offline, HTTP error, size or hash mismatch)."""


class DataError(LavisliteError, ValueError):
    """A data file (annotation, image, video) is missing, corrupt or malformed."""


class OutputError(LavisliteError, OSError):
    """A result file could not be written (disk full, no permission); what was written before is kept."""
