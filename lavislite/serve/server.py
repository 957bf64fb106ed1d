"""Running the application with uvicorn: in the foreground (``lavislite serve``) or on a background thread
bound to a free loopback port (tests, benchmarks, notebooks)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from lavislite.common.errors import ConfigError


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or --host") from exc
    return sock


def _server(app: Any, log_level: str, workers_limit: int | None = None) -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                                         limit_concurrency=workers_limit, timeout_keep_alive=30))


def serve_forever(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted (Ctrl-C stops it cleanly)."""
    sock = _bind(host, port)
    _server(app, log_level).run(sockets=[sock])


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` — the app served on ``127.0.0.1:<free port>`` from a thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", log_level: str = "warning") -> None:
        self.app, self.host, self.log_level = app, host, log_level
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> str:
        sock = _bind(self.host, 0)  # port 0: the kernel picks a free one
        port = sock.getsockname()[1]
        self.server = _server(self.app, self.log_level)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True, name="lavislite-serve")
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.host}:{port}")
            time.sleep(0.01)
        self.url = f"http://{self.host}:{port}"
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
