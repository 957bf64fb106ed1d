"""Exception types. Every message names the thing at fault and says how to fix it."""

from __future__ import annotations


class LavisliteError(Exception):
    """Base class of every error lavislite raises on purpose."""


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
