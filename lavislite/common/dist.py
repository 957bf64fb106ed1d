"""Distributed helpers that are safe in a single process.

A run is distributed only when launched by ``torchrun`` with ``WORLD_SIZE > 1``; a single-process run
never touches ``torch.distributed`` and every helper here degrades to the obvious single-process answer
(rank 0, world size 1, ``barrier`` a no-op). LAVIS's unconditional ``dist.barrier()`` (issues #353, #738)
is the failure this module exists to avoid.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from typing import Any, Hashable, Iterable

import torch
import torch.distributed as dist

from lavislite.common.errors import ConfigError

logger = logging.getLogger(__name__)


# -- state ------------------------------------------------------------------------------------
def is_dist_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_initialized() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_dist_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def launched_distributed() -> bool:
    """True when the environment (torchrun) asks for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


# -- setup ------------------------------------------------------------------------------------
def init_distributed(run_cfg: Any = None, device: torch.device | None = None) -> bool:
    """Join the process group described by torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    Does nothing (returns False) for a single process or when ``run.distributed`` is false. The backend is
    ``run.dist_backend`` or nccl on CUDA / gloo otherwise; ``run.dist_timeout_s`` bounds every collective,
    so a rank that died ends the others instead of hanging them.
    """
    get = (lambda k, d=None: run_cfg.get(k, d)) if run_cfg is not None else (lambda k, d=None: d)
    mode = get("distributed", "auto")
    if mode is False or not launched_distributed():
        return False
    if is_dist_initialized():
        return True
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: launch with "
            "`torchrun --nproc_per_node=N -m lavislite.train ...` (or unset WORLD_SIZE for one process)"
        )
    on_cuda = device is not None and device.type == "cuda"
    backend = get("dist_backend") or ("nccl" if on_cuda else "gloo")
    timeout = datetime.timedelta(seconds=float(get("dist_timeout_s", 300) or 300))
    if on_cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend=backend, timeout=timeout)
    logger.debug("rank %d/%d joined the %s process group", get_rank(), get_world_size(), backend)
    return True


def destroy_distributed() -> None:
    if is_dist_initialized():
        dist.destroy_process_group()


_PEER_LOST = ("Connection closed by peer", "Connection reset", "timed out", "Timeout", "Broken pipe")


def report_failure(exc: BaseException) -> None:
    """Print one line naming this rank and the error, so torchrun's output says who failed first.

    A rank that only lost its peers in a collective says so, instead of claiming the failure.
    """
    where = f"rank {get_rank()}/{get_world_size()}" if is_dist_initialized() else f"rank {os.environ.get('RANK', '0')}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    if is_dist_initialized() and any(m in str(exc) for m in _PEER_LOST):
        print(
            f"lavislite: {where} stopped: a collective failed ({text[:200]}); another rank probably failed first "
            f"(see its 'lavislite: rank N failed' line, or torchrun's Root Cause)",
            file=sys.stderr, flush=True,
        )
        return
    print(f"lavislite: {where} failed: {type(exc).__name__}: {text}", file=sys.stderr, flush=True)


# -- collectives (no-ops for one process) ------------------------------------------------------
def barrier() -> None:
    if is_dist_initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank (a one-item list for a single process)."""
    if not is_dist_initialized():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_dist_initialized():
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean of each scalar over ranks (identity for one process)."""
    if not is_dist_initialized() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    t = (t / get_world_size()).cpu()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def gather_results(results: list[dict], id_key: str) -> list[dict]:
    """Per-rank result lists gathered to every rank, each ``id_key`` kept once.

    Ranks exchange their lists over the process group (no shared filesystem). With an unshuffled
    ``DistributedSampler`` rank r holds samples r, r+W, r+2W, ...; interleaving the lists restores dataset
    order, and the padding the sampler adds at the end repeats ids already seen, so it is dropped.
    """
    per_rank = all_gather_object(list(results))
    merged = _interleave(per_rank)
    return dedupe(merged, id_key)


def _interleave(lists: list[list[Any]]) -> list[Any]:
    out: list[Any] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out


def dedupe(results: Iterable[dict], id_key: str) -> list[dict]:
    """Keep the first result of each id (one pass, a set: O(n), unlike LAVIS's O(n^2) merge)."""
    seen: set[Hashable] = set()
    out = []
    for r in results:
        if id_key not in r:
            raise ConfigError(
                f"a result has no id key {id_key!r} (keys: {sorted(r)}); valid_step must put the sample's "
                f"unique id under the task's result_id_key"
            )
        key = _hashable(r[id_key])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _hashable(v: Any) -> Hashable:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else tuple(v.flatten().tolist())
    if isinstance(v, list):
        return tuple(v)
    return v
