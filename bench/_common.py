"""Shared helpers of the bench scripts: CLI flags, interleaved timing (median), peak memory, machine info,
a BERT-sized synthetic tokenizer, and writing ``bench/results/<name>.json``.

Timing protocol: every side of a comparison runs ``warmup`` times, then the sides take turns
(``peer, lavislite, peer, lavislite, ...``) for ``repeats`` rounds, so a load spike on a shared machine
hits both; the median of each side is reported and the ratio is ``median(peer) / median(lavislite)``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


# -- CLI --------------------------------------------------------------------------------------------
def parser(description: str, *, repeats: int = 3, batch: int | None = None) -> argparse.ArgumentParser:
    """The flags every script shares: --repeats --warmup --quick --threads --device --out (+ --batch)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=repeats, help="timed rounds per side (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per side first")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 1 repeat (numbers meaningless)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's, = cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/<script>.json)")
    if batch is not None:
        p.add_argument("--batch", type=int, default=batch)
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Threads, seed, quick-mode repeats; returns the device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.warmup = 1, min(args.warmup, 1)
    torch.manual_seed(0)
    return torch.device(args.device)


def machine() -> dict[str, Any]:
    """What the numbers were measured on (the load average tells how shared the machine was)."""
    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
    else:
        info["device"] = f"cpu: {_cpu_name()} ({os.cpu_count()} cores visible)"
    info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- timing -----------------------------------------------------------------------------------------
def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, device: torch.device | None = None) -> dict[str, dict]:
    """Per callable: ``max(1, warmup)`` untimed calls (the first one measures ``peak_mb``, the peak memory
    growth of a cold call), then ``repeats`` interleaved timed rounds. Returns per name: ``median_s``,
    ``times``, ``peak_mb`` and the last ``output``.

    ``warmup=0`` (for workloads too slow to run twice on a shared machine): the cold, memory-measured
    call is also the first timed round, taken interleaved like the others (then ``repeats - 1`` more)."""
    out: dict[str, dict] = {}
    for name, fn in fns.items():
        if warmup <= 0:
            out[name] = {"times": [], "output": None, "peak_mb": None}
            continue
        with PeakMemory(device) as m:
            output = fn()
        out[name] = {"times": [], "output": output, "peak_mb": m.mb}
        for _ in range(warmup - 1):
            out[name]["output"] = fn()
    if warmup <= 0:
        for name, fn in fns.items():
            _sync(device)
            with PeakMemory(device) as m:
                t0 = time.perf_counter()
                out[name]["output"] = fn()
                _sync(device)
                out[name]["times"].append(time.perf_counter() - t0)
            out[name]["peak_mb"] = m.mb
        repeats -= 1
    for _ in range(max(0, repeats)):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            result = fn()
            _sync(device)
            out[name]["times"].append(time.perf_counter() - t0)
            out[name]["output"] = result
    for rec in out.values():
        rec["median_s"] = statistics.median(rec["times"])
        rec["times"] = [round(t, 4) for t in rec["times"]]
    return out


def timed_once(fn: Callable[[], Any], device: torch.device | None = None) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - t0


# -- memory -----------------------------------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as f:  # Linux: resident pages are the second field
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory growth (bytes) while the block runs: CUDA max allocated, else RSS sampled every 2 ms."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.cuda = device is not None and device.type == "cuda"
        self.growth = 0

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = self.peak = _rss()
        self._stop = False
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.growth = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop = True
            self._thread.join()
            self.peak = max(self.peak, _rss())
            self.growth = self.peak - self.base

    @property
    def mb(self) -> float:
        return round(self.growth / 2**20, 1)


def peak_mb(fn: Callable[[], Any], device: torch.device | None = None) -> float:
    """Peak memory growth (MiB) of one call of ``fn`` (after warm-up, so caches/allocator are primed)."""
    with PeakMemory(device) as m:
        fn()
    return m.mb


MEMORY_HOW_CPU = "peak RSS growth during the first (warm-up) call (/proc/self/statm sampled every 2 ms)"
MEMORY_HOW_CUDA = "torch.cuda.max_memory_allocated growth during the first (warm-up) call"


def memory_how(device: torch.device) -> str:
    return MEMORY_HOW_CUDA if device.type == "cuda" else MEMORY_HOW_CPU


# -- data -------------------------------------------------------------------------------------------
def synthetic_tokenizer(folder: Path):
    """A BERT-sized WordPiece vocabulary (30,522 entries, special tokens at BERT's ids; lavislite adds
    [DEC]/[ENC] = 30,524, the real size), written to ``folder``; offline stand-in for bert-base-uncased."""
    from lavislite.models.tokenizer import init_tokenizer

    words = [f"w{i}" for i in range(30522 - 110)]
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"[unused{i}]" for i in range(99, 105)] + words
    assert len(vocab) == 30522 and vocab.index("[CLS]") == 101 and vocab.index("[SEP]") == 102
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return init_tokenizer(folder)


def random_words(n: int, seed: int, lo: int = 8, hi: int = 14, vocab: int = 30000) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(vocab)}" for _ in range(rng.randint(lo, hi))) for _ in range(n)]


# -- output -----------------------------------------------------------------------------------------
def write(name: str, result: dict, out: Path | None = None) -> Path:
    """Write ``result`` (plus machine info) to ``out`` or bench/results/<name>.json; print it."""
    result = {"workload": name, "machine": machine(), **result}
    path = Path(out) if out is not None else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}", flush=True)
    return path


def side(rec: dict, n_items: int | None = None) -> dict:
    """The JSON record of one timed side."""
    d = {"median_s": round(rec["median_s"], 4), "times_s": rec["times"], "peak_mb": rec.get("peak_mb")}
    if n_items:
        d["items_per_s"] = round(n_items / rec["median_s"], 3)
    return d
