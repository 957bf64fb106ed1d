"""The training loop core shared by every runner: one epoch of iterations.

    for each iteration:
        batch -> device
        with autocast: out = task.train_step(model, batch); loss = out["loss"] / group size
        backward (DDP gradient sync only on the last micro-batch of an accumulation group)
        last micro-batch: unscale, clip, optimizer step, scaler update, zero grad, lr for the next step
        every run.log_freq steps: log mean loss and lr (log.txt, metrics.jsonl)
        every run.checkpoint_every_steps steps: save checkpoint_latest.pth
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from lavislite.common import dist
from lavislite.common.errors import ConfigError
from lavislite.common.logging import MetricsLog, progress
from lavislite.runners.checkpointing import Progress

logger = logging.getLogger(__name__)


# -- precision ----------------------------------------------------------------------------------
_FULL_PRECISION = ("none", "null", "false", "off", "fp32")


def amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """``run.amp`` -> autocast dtype: bf16 anywhere; fp16 on CUDA only (CPU falls back to bf16).

    ``null``/``false`` and the strings ``none``, ``off``, ``fp32`` (as typed on a command line) mean full precision.
    """
    if not amp or str(amp).lower() in _FULL_PRECISION:
        return None
    amp = str(amp).lower()
    if amp not in ("bf16", "fp16"):
        raise ConfigError(f"run.amp={amp!r}: use null (fp32), bf16 or fp16")
    if amp == "fp16" and device.type != "cuda":
        logger.warning("run.amp=fp16 needs CUDA; autocasting to bf16 on %s instead", device)
        return torch.bfloat16
    return torch.float16 if amp == "fp16" else torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)


def move_to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


# -- the loop -------------------------------------------------------------------------------------
@dataclass
class TrainContext:
    """What the loop needs, built once by the runner."""

    task: Any
    model: nn.Module  # possibly DDP-wrapped
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: torch.dtype | None
    accum: int
    grad_clip: float | None
    log_freq: int
    checkpoint_every: int | None
    metrics: MetricsLog


def group_size(i: int, length: int, accum: int) -> int:
    """Micro-batches in the accumulation group of iteration ``i`` (the last group may be short)."""
    start = (i // accum) * accum
    return min(accum, length - start)


def steps_in_epoch(length: int, accum: int) -> int:
    return math.ceil(length / accum)


def train_epoch(
    ctx: TrainContext,
    stream: Any,
    length: int,
    prog: Progress,
    save_checkpoint: Callable[[], None],
) -> dict[str, float]:
    """Run iterations ``prog.iter_in_epoch .. length-1`` of epoch ``prog.epoch``; returns epoch means."""
    model = ctx.model
    model.train()
    ctx.scheduler.step(prog.epoch, prog.step)
    bar = progress(range(prog.iter_in_epoch, length), desc=f"train epoch {prog.epoch}", enabled=dist.is_main_process())
    for i in bar:
        samples = move_to(next(stream), ctx.device)
        n = group_size(i, length, ctx.accum)
        last_micro = (i + 1) % ctx.accum == 0 or i + 1 == length
        sync = contextlib.nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
        if hasattr(ctx.task, "set_train_progress"):  # heads that ramp a weight by epoch (BLIP ITC alpha)
            ctx.task.set_train_progress(prog.epoch, i, length)
        with sync:
            with autocast(ctx.device, ctx.amp):
                out = ctx.task.train_step(model, samples)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss.item()} at epoch {prog.epoch} iteration {i} (step {prog.step}); lower run.init_lr, "
                    f"set run.grad_clip, or use run.amp=bf16 instead of fp16"
                )
            ctx.scaler.scale(loss.float() / n).backward()
        _accumulate(prog, out)
        prog.iter_in_epoch = i + 1
        prog.data_epoch, prog.data_batch = stream.data_epoch, stream.data_batch
        if not last_micro:
            continue
        lr = _optimizer_step(ctx)
        prog.step += 1
        ctx.scheduler.step(prog.epoch, prog.step)
        if prog.step % ctx.log_freq == 0 or i + 1 == length:
            _log(ctx, prog, lr)
        if ctx.checkpoint_every and prog.step % ctx.checkpoint_every == 0 and i + 1 < length:
            save_checkpoint()
    means = {k: v / max(1.0, prog.epoch_meter.get("_n", 1.0)) for k, v in prog.epoch_meter.items() if k != "_n"}
    return dist.all_reduce_mean(means)


def _optimizer_step(ctx: TrainContext) -> float:
    if ctx.grad_clip:
        ctx.scaler.unscale_(ctx.optimizer)
        torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), float(ctx.grad_clip))
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    ctx.optimizer.zero_grad(set_to_none=True)
    return float(ctx.optimizer.param_groups[0]["lr"])


def _accumulate(prog: Progress, out: dict[str, Any]) -> None:
    for meter in (prog.meter, prog.epoch_meter):
        meter["_n"] = meter.get("_n", 0.0) + 1.0
        for k, v in out.items():
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                meter[k] = meter.get(k, 0.0) + float(v.detach())
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                meter[k] = meter.get(k, 0.0) + float(v)


def _log(ctx: TrainContext, prog: Progress, lr: float) -> None:
    n = max(1.0, prog.meter.get("_n", 1.0))
    means = dist.all_reduce_mean({k: v / n for k, v in prog.meter.items() if k != "_n"})
    prog.meter = {}
    if not dist.is_main_process():
        return
    logger.info(
        "epoch %d step %d  lr %.3e  %s", prog.epoch, prog.step, lr, "  ".join(f"{k} {v:.4f}" for k, v in sorted(means.items()))
    )
    ctx.metrics.write({"kind": "train", "epoch": prog.epoch, "step": prog.step, "lr": lr, **means})
