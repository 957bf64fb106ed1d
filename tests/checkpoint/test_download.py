"""cached_path against a local HTTP server: cache hits, truncation, corruption, hashes, offline."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from lavislite.common.download import atomic_write, cached_path, url_filename
from lavislite.common.errors import DownloadError

PAYLOAD = bytes(range(256)) * 64  # 16 KiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = 5  # a stuck client cannot hold a handler thread for long

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        state: FileServer = self.server.state  # type: ignore[attr-defined]
        state.hits[self.path] += 1
        body = state.files.get(self.path)
        queue = state.modes.get(self.path)
        mode = queue.pop(0) if queue else "ok"
        if body is None or mode == "404":
            self.send_error(404, "Not Found")
            return
        if mode == "slow":
            time.sleep(0.3)
        if mode == "corrupt":
            body = bytes(b ^ 0xFF for b in body)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate":  # promise the whole body, send half, then hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class FileServer:
    """Files served on 127.0.0.1; ``modes[path]`` is a queue of per-request behaviours."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, list[str]] = {}
        self.hits: Counter[str] = Counter()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.watchdog = threading.Timer(60, self.httpd.shutdown)  # stops by itself even if teardown never runs
        self.watchdog.daemon = True
        self.watchdog.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.watchdog.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    srv = FileServer()
    srv.files["/models/model_base.pth"] = PAYLOAD
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    for name in ("LAVISLITE_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_download_once_then_cache_hit(server, tmp_path):
    url = server.url("/models/model_base.pth")
    first = cached_path(url, cache_dir=tmp_path, sha256=PAYLOAD_SHA, size=len(PAYLOAD), progress=False)
    assert first == tmp_path / "checkpoints" / "model_base.pth"
    assert first.read_bytes() == PAYLOAD
    second = cached_path(url, cache_dir=tmp_path, sha256=PAYLOAD_SHA, progress=False)
    assert second == first
    assert server.hits["/models/model_base.pth"] == 1  # the second call never reached the server
    assert _leftovers(tmp_path) == ["model_base.pth"]  # no temp files left behind


def test_default_cache_dir_follows_env(server, tmp_path, monkeypatch):
    monkeypatch.setenv("LAVISLITE_CACHE", str(tmp_path / "envcache"))
    path = cached_path(server.url("/models/model_base.pth"), progress=False, subdir="weights")
    assert path == tmp_path / "envcache" / "weights" / "model_base.pth"


def test_truncated_download_leaves_no_file(server, tmp_path):
    server.modes["/models/model_base.pth"] = ["truncate"]
    url = server.url("/models/model_base.pth")
    with pytest.raises(DownloadError) as err:
        cached_path(url, cache_dir=tmp_path, progress=False)
    msg = str(err.value)
    assert url in msg and "incomplete" in msg
    assert str(tmp_path / "checkpoints" / "model_base.pth") in msg
    assert _leftovers(tmp_path) == []
    # the next call downloads it properly
    assert cached_path(url, cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD


def test_sha256_mismatch_detected(server, tmp_path):
    url = server.url("/models/model_base.pth")
    with pytest.raises(DownloadError, match="sha256") as err:
        cached_path(url, cache_dir=tmp_path, sha256="0" * 64, progress=False)
    assert url in str(err.value)
    assert _leftovers(tmp_path) == []
    with pytest.raises(DownloadError, match="size"):
        cached_path(url, cache_dir=tmp_path, size=len(PAYLOAD) + 1, progress=False)


def test_corrupt_cached_file_refetched_once(server, tmp_path):
    url = server.url("/models/model_base.pth")
    cached = tmp_path / "checkpoints" / "model_base.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"garbage")
    path = cached_path(url, cache_dir=tmp_path, sha256=PAYLOAD_SHA, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.hits["/models/model_base.pth"] == 1


def test_corrupt_again_after_refetch_raises(server, tmp_path):
    url = server.url("/models/model_base.pth")
    cached = tmp_path / "checkpoints" / "model_base.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"garbage")
    server.modes["/models/model_base.pth"] = ["corrupt", "corrupt"]
    with pytest.raises(DownloadError, match="sha256"):
        cached_path(url, cache_dir=tmp_path, sha256=PAYLOAD_SHA, progress=False)
    assert server.hits["/models/model_base.pth"] == 1  # fetched again once, not in a loop
    assert not cached.exists()


def test_http_error_names_url_and_place(server, tmp_path):
    url = server.url("/models/missing_model.pth")
    with pytest.raises(DownloadError) as err:
        cached_path(url, cache_dir=tmp_path, progress=False)
    msg = str(err.value)
    assert "404" in msg and url in msg and str(tmp_path / "checkpoints" / "missing_model.pth") in msg


def test_unreachable_server_fails_fast(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/models/model_large.pth"
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        cached_path(url, cache_dir=tmp_path, progress=False, timeout=5)
    assert time.monotonic() - start < 5
    assert url in str(err.value) and str(tmp_path / "checkpoints" / "model_large.pth") in str(err.value)


@pytest.mark.parametrize("env", ["LAVISLITE_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_env(server, tmp_path, monkeypatch, env):
    url = server.url("/models/model_base.pth")
    monkeypatch.setenv(env, "1")
    with pytest.raises(DownloadError) as err:
        cached_path(url, cache_dir=tmp_path, progress=False)
    assert "offline" in str(err.value) and url in str(err.value)
    assert str(tmp_path / "checkpoints" / "model_base.pth") in str(err.value)
    assert server.hits["/models/model_base.pth"] == 0
    # a file placed by hand is used offline
    (tmp_path / "checkpoints" / "model_base.pth").write_bytes(PAYLOAD)
    assert cached_path(url, cache_dir=tmp_path, sha256=PAYLOAD_SHA, progress=False).read_bytes() == PAYLOAD


def test_concurrent_callers_download_once(server, tmp_path):
    server.modes["/models/model_base.pth"] = ["slow"] * 4
    url = server.url("/models/model_base.pth")
    results, errors = [], []

    def fetch() -> None:
        try:
            results.append(cached_path(url, cache_dir=tmp_path, sha256=PAYLOAD_SHA, progress=False))
        except Exception as e:  # surfaced by the assert below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors and len(results) == 3
    assert server.hits["/models/model_base.pth"] == 1


def test_local_paths(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert cached_path(f) == f
    assert cached_path(str(f)) == f
    with pytest.raises(DownloadError, match=str(tmp_path / "nope.pth")):
        cached_path(tmp_path / "nope.pth")


def test_url_filename():
    assert url_filename("https://h/a/b/model%2A_base.pth?x=1") == "model*_base.pth"
    with pytest.raises(DownloadError):
        url_filename("https://h/")


def test_atomic_write_failure_keeps_old_file(tmp_path):
    target = tmp_path / "ckpt.pth"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == ["ckpt.pth"]


def test_unusable_cache_dir_is_explained(server, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    url = server.url("/models/model_base.pth")
    with pytest.raises(DownloadError) as err:
        cached_path(url, cache_dir=blocker, progress=False)
    assert "LAVISLITE_CACHE" in str(err.value) and url in str(err.value)
