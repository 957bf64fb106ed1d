"""Dynamic batching: concurrent requests to one head are run as one batch.

A :class:`DynamicBatcher` owns one worker thread. The first request to arrive opens a batch; the batch
runs when it holds ``max_batch`` requests or ``max_wait_ms`` have passed since it opened, whichever is
first. A lone request therefore waits at most ``max_wait_ms``; under load the batches fill at once.
``max_batch=1`` turns batching off (requests still run one at a time on the same thread, so the two
modes differ only in batching).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from lavislite.common.errors import ConfigError

BatchFn = Callable[[list[Any]], Sequence[Any]]


class DynamicBatcher:
    """``await batcher(item)`` -> ``fn([... item ...])[i]``; ``fn`` maps a list of items to one result each."""

    def __init__(self, fn: BatchFn, max_batch: int = 8, max_wait_ms: float = 10.0, name: str = "") -> None:
        if int(max_batch) < 1 or float(max_wait_ms) < 0:
            raise ConfigError(f"--max-batch {max_batch} / --max-wait-ms {max_wait_ms}: use max_batch >= 1 and max_wait_ms >= 0")
        self.fn, self.max_batch, self.max_wait = fn, int(max_batch), float(max_wait_ms) / 1000.0
        self.name = name
        self.batches = 0  # model calls made
        self.items = 0  # requests served through them
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> Future:
        fut: Future = Future()
        self._q.put((item, fut))
        return fut

    async def __call__(self, item: Any) -> Any:
        return await asyncio.wrap_future(self.submit(item))

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=5)

    def _collect(self, first: tuple[Any, Future]) -> list[tuple[Any, Future]]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:  # closing: finish this batch first
                self._q.put(None)
                break
            batch.append(nxt)
        return batch

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = self._collect(first) if self.max_batch > 1 else [first]
            batch = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                results = list(self.fn([item for item, _ in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function {self.name} returned {len(results)} results for {len(batch)} items")
            except BaseException as exc:  # noqa: BLE001  (handed to every waiting request; the thread goes on)
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, fut), res in zip(batch, results):
                fut.set_result(res)
