"""Downloads survive kill -9 and corruption: temp file + rename, verified cache, refetch, clear offline errors.

A local HTTP server on 127.0.0.1 serves a real checkpoint, optionally trickling it so that a download can
be killed (SIGKILL) half way. Mutation checks re-run a scenario with the protection patched out and show
the bad outcome the protected run avoids.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from lavislite.common import download
from lavislite.common.checkpoint import read_state_dict
from lavislite.common.download import cached_path
from lavislite.common.errors import CheckpointError, DownloadError

REPO = Path(__file__).resolve().parents[2]
STATE = {"w": torch.arange(750_000, dtype=torch.float32)}  # ~3 MB: several of download.py's 1 MiB blocks


def _payload() -> bytes:
    buf = io.BytesIO()
    torch.save({"model": STATE}, buf)
    return buf.getvalue()


PAYLOAD = _payload()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        srv.hits[self.path] += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if srv.trickle:  # 64 KB every 20 ms: ~1 s in all, so a kill lands after the first block, long before the end
            try:
                for i in range(0, len(PAYLOAD), 65536):
                    self.wfile.write(PAYLOAD[i : i + 65536])
                    self.wfile.flush()
                    time.sleep(0.02)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        self.wfile.write(PAYLOAD)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.hits, httpd.trickle = Counter(), False
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    for name in download.OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)


def url_of(httpd, name="model_base.pth") -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/weights/{name}"


_CHILD = """
import sys
from pathlib import Path
from lavislite.common import download
if sys.argv[3] == "unprotected":  # the mutation: write straight onto the final name
    import contextlib
    @contextlib.contextmanager
    def plain(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        yield Path(path)
    download.atomic_write = plain
download.cached_path(sys.argv[1], cache_dir=sys.argv[2], progress=False)
"""


def _kill_mid_download(url: str, cache: Path, mode: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, url, str(cache), mode], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        partial = [p for p in (cache / "checkpoints").glob("*") if not p.name.endswith(".lock") and p.stat().st_size > 0]
        if partial:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]


def test_kill_9_mid_download_never_leaves_a_partial_file_under_the_final_name(server, tmp_path):
    server.trickle = True
    url = url_of(server)
    _kill_mid_download(url, tmp_path, "protected")
    final = tmp_path / "checkpoints" / "model_base.pth"
    assert not final.exists()
    server.trickle = False
    assert torch.equal(read_state_dict(cached_path(url, cache_dir=tmp_path, progress=False))["w"], STATE["w"])
    assert final.read_bytes() == PAYLOAD


def test_mutation_without_the_temp_file_a_kill_leaves_a_truncated_cache(server, tmp_path):
    server.trickle = True
    url = url_of(server)
    _kill_mid_download(url, tmp_path, "unprotected")
    final = tmp_path / "checkpoints" / "model_base.pth"
    assert 0 < final.stat().st_size < len(PAYLOAD)  # the bad outcome the protected run avoids
    assert cached_path(url, cache_dir=tmp_path, progress=False).read_bytes() != PAYLOAD  # and it would be used


def test_corrupt_cached_file_detected_by_hash_and_refetched(server, tmp_path, monkeypatch):
    url = url_of(server)
    final = tmp_path / "checkpoints" / "model_base.pth"
    final.parent.mkdir(parents=True)
    final.write_bytes(PAYLOAD[:-10] + b"\0" * 10)  # same-ish size, wrong bytes
    assert cached_path(url, cache_dir=tmp_path, sha256=SHA, progress=False).read_bytes() == PAYLOAD
    assert server.hits["/weights/model_base.pth"] == 1
    # mutation check: without the verification the corrupt file is served from the cache
    final.write_bytes(b"corrupt")
    monkeypatch.setattr(download, "_verify", lambda *a, **k: None)
    assert cached_path(url, cache_dir=tmp_path, sha256=SHA, progress=False).read_bytes() == b"corrupt"


def test_wrong_size_or_hash_from_the_server_is_refused(server, tmp_path):
    url = url_of(server)
    with pytest.raises(DownloadError, match=r"sha256") as err:
        cached_path(url, cache_dir=tmp_path, sha256="f" * 64, progress=False)
    assert url in str(err.value) and str(tmp_path / "checkpoints" / "model_base.pth") in str(err.value)
    with pytest.raises(DownloadError, match=r"size .*expected"):
        cached_path(url, cache_dir=tmp_path, size=len(PAYLOAD) - 1, progress=False)
    assert not (tmp_path / "checkpoints" / "model_base.pth").exists()


def test_unreadable_cached_checkpoint_without_hash_is_refetched(server, tmp_path, monkeypatch):
    """Model URLs carry no hash: a cached .pth that no longer parses is deleted and fetched once more."""
    url = url_of(server)
    final = tmp_path / "checkpoints" / "model_base.pth"
    final.parent.mkdir(parents=True)
    final.write_bytes(PAYLOAD[: len(PAYLOAD) // 2])
    assert torch.equal(read_state_dict(url, cache_dir=tmp_path)["w"], STATE["w"])
    assert server.hits["/weights/model_base.pth"] == 1 and final.read_bytes() == PAYLOAD
    # offline, the same broken cache is a clear error naming the file (no silent refetch attempt)
    final.write_bytes(PAYLOAD[: len(PAYLOAD) // 2])
    monkeypatch.setenv("LAVISLITE_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"model_base\.pth.*truncated or corrupt"):
        read_state_dict(url, cache_dir=tmp_path)
    assert server.hits["/weights/model_base.pth"] == 1


def test_offline_error_names_url_and_where_to_put_the_file(server, tmp_path, monkeypatch):
    url = url_of(server, "model_large.pth")
    monkeypatch.setenv("LAVISLITE_OFFLINE", "1")
    with pytest.raises(DownloadError) as err:
        read_state_dict(url, cache_dir=tmp_path)
    msg = str(err.value)
    assert url in msg and str(tmp_path / "checkpoints" / "model_large.pth") in msg and "offline" in msg
    assert server.hits == Counter()
