"""Fetch files once into the lavislite cache: atomic, locked across processes, verified, offline-aware.

``cached_path(url)`` puts ``https://host/a/b/model.pth`` at ``<cache>/checkpoints/model.pth``. The
download streams into a temp file next to the target and is renamed into place only after its size
(Content-Length, and ``size`` if given) and ``sha256`` check out, so a file under its final name is
always complete. A file lock (iopath's portalocker lock) makes concurrent processes, e.g. torchrun
ranks, download once: the others wait and then find the file.

iopath's own ``HTTPURLHandler``/``download`` is not used for the transfer itself: it calls
``urlretrieve`` without a timeout (a dead server hangs forever), uses a fixed ``<file>.tmp`` name and
lays files out by URL path. Its lock is used as is.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from lavislite.common.errors import DownloadError
from lavislite.common.utils import atomic_write  # noqa: F401  (also imported from here by common.checkpoint)

logger = logging.getLogger(__name__)

OFFLINE_ENVS = ("LAVISLITE_OFFLINE", "HF_HUB_OFFLINE")
DEFAULT_TIMEOUT_S = 30.0  # connect timeout and the longest wait for any one read
_CHUNK = 1 << 20


def is_offline() -> bool:
    """True when ``LAVISLITE_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to a true value."""
    return any(os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"} for name in OFFLINE_ENVS)


def is_url(path: str | os.PathLike) -> bool:
    return isinstance(path, str) and path.split("://", 1)[0].lower() in {"http", "https"} and "://" in path


def default_cache_dir() -> Path:
    from lavislite.common.config import get_cache_dir

    return Path(get_cache_dir())


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def url_filename(url: str) -> str:
    """The last path component of ``url``, unquoted (query and fragment dropped)."""
    name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rstrip("/").rsplit("/", 1)[-1])
    if not name or name in {".", ".."}:
        raise DownloadError(f"Cannot tell a file name from the URL {url!r}; give a URL that ends in a file name.")
    return name


def _verify(path: Path, sha256: str | None, size: int | None) -> str | None:
    """None when ``path`` matches; otherwise what is wrong with it."""
    if size is not None and path.stat().st_size != size:
        return f"size {path.stat().st_size} bytes, expected {size}"
    if sha256 is not None:
        digest = sha256_of(path)
        if digest.lower() != sha256.lower():
            return f"sha256 {digest}, expected {sha256.lower()}"
    return None


def _place_by_hand(url: str, target: Path) -> str:
    return (
        f"Download it yourself and place it at {target} (the cache is $LAVISLITE_CACHE or ~/.cache/lavislite), "
        f"or pass the local file path instead of the URL {url}."
    )


def _stream(url: str, dest: Path, *, timeout: float, progress: bool, desc: str) -> None:
    """Write the body of ``url`` into ``dest``; raise if it ends before its Content-Length."""
    request = urllib.request.Request(url, headers={"User-Agent": "lavislite"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=expected, unit="B", unit_scale=True, desc=desc, leave=False)
        got = 0
        try:
            while True:
                block = response.read(_CHUNK)
                if not block:
                    break
                out.write(block)
                got += len(block)
                if bar is not None:
                    bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    if expected is not None and got != expected:
        raise DownloadError(f"incomplete transfer: got {got} of {expected} bytes")


def _download(url: str, target: Path, *, sha256: str | None, size: int | None, timeout: float, progress: bool) -> None:
    """Download ``url`` onto ``target`` atomically, verified before it gets its final name."""
    if is_offline():
        raise DownloadError(
            f"{target} is not cached and offline mode is on ({'/'.join(OFFLINE_ENVS)}), so {url} was not fetched. "
            + _place_by_hand(url, target)
        )
    logger.info("Downloading %s -> %s", url, target)
    try:
        with atomic_write(target) as tmp:
            _stream(url, tmp, timeout=timeout, progress=progress, desc=target.name)
            problem = _verify(tmp, sha256, size)
            if problem:
                raise DownloadError(f"the downloaded file has {problem}")
    except DownloadError as e:
        raise DownloadError(f"Could not download {url}: {e}. " + _place_by_hand(url, target)) from e
    # HTTPError is a URLError, timeouts are OSErrors, a body cut short is http.client.IncompleteRead
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        if isinstance(e, urllib.error.HTTPError):
            reason = f"HTTP {e.code} {e.reason}"
        elif isinstance(e, http.client.IncompleteRead):
            reason = f"incomplete transfer, the connection closed early ({e!r})"
        else:
            reason = str(getattr(e, "reason", e)) or type(e).__name__
        raise DownloadError(f"Could not download {url}: {reason}. " + _place_by_hand(url, target)) from e


def cached_path(
    url_or_path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    subdir: str = "checkpoints",
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """A local path for ``url_or_path``: local paths as they are, http(s) URLs downloaded once.

    URLs land at ``<cache_dir>/<subdir>/<file name>`` (``cache_dir`` defaults to
    ``lavislite.common.config.get_cache_dir()``). With ``sha256``/``size`` the file is checked after
    download and on every cache hit; a cached file that fails is deleted and fetched once more.
    Raises ``DownloadError`` (naming the URL and where to put the file by hand) when offline, on an
    HTTP/network error, on a truncated transfer, or when the check fails.
    """
    if not is_url(url_or_path):
        path = Path(url_or_path).expanduser()
        if not path.exists():
            raise DownloadError(f"No such file or directory: {path}. Check the path, or give an http(s) URL.")
        return path
    url = str(url_or_path)
    target = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / subdir / url_filename(url)

    if target.is_file() and _verify(target, sha256, size) is None:  # fast path: no lock for a good cached file
        return target

    import portalocker
    from iopath.common.file_io import file_lock  # portalocker (flock): released by the OS if the holder dies

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = file_lock(str(target))
        lock.acquire()
    except (OSError, portalocker.exceptions.BaseLockException) as e:
        raise DownloadError(
            f"Cannot use the cache directory {target.parent} for {url}: {e}. Set LAVISLITE_CACHE to a writable "
            "directory, or pass a local file path instead of the URL."
        ) from e
    try:
        if target.is_file():  # another process may have finished it while we waited for the lock
            problem = _verify(target, sha256, size)
            if problem is None:
                return target
            logger.warning("Cached %s has %s; deleting it and downloading %s again", target, problem, url)
            target.unlink()
        _download(url, target, sha256=sha256, size=size, timeout=timeout, progress=progress)
    finally:
        lock.release()
    return target
