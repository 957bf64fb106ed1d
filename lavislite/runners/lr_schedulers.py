"""Learning-rate schedules, registered by name (``run.lr_sched``).

A schedule is a pure function of (epoch, optimizer step): ``lr_at(epoch, step)``. ``step(epoch, step)``
writes that value into every parameter group. Being pure, a schedule needs no state to resume; its
``state_dict`` only records the settings so a resume with different ones is noticed.

Steps count optimizer updates (after gradient accumulation), from 0, over the whole run; ``epoch``
is the runner's epoch (runner_iter: the inner epoch).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry


class LRScheduler:
    """Warm up linearly from ``warmup_lr`` to ``init_lr`` over ``warmup_steps`` steps, then ``decay``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        init_lr: float,
        min_lr: float = 0.0,
        warmup_lr: float = 0.0,
        warmup_steps: int = 0,
        lr_decay_rate: float | None = None,
    ) -> None:
        if init_lr <= 0:
            raise ConfigError(f"run.init_lr must be > 0, got {init_lr}")
        if warmup_steps < 0:
            raise ConfigError(f"run.warmup_steps must be >= 0, got {warmup_steps}")
        self.optimizer = optimizer
        self.total_steps = max(1, int(total_steps))
        self.init_lr = float(init_lr)
        self.min_lr = float(min_lr)
        self.warmup_lr = float(warmup_lr)
        self.warmup_steps = int(warmup_steps)
        self.lr_decay_rate = lr_decay_rate

    def lr_at(self, epoch: int, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_lr + (self.init_lr - self.warmup_lr) * step / self.warmup_steps
        return self.decay(epoch, step)

    def decay(self, epoch: int, step: int) -> float:
        raise NotImplementedError

    def step(self, epoch: int, step: int) -> float:
        lr = self.lr_at(epoch, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def state_dict(self) -> dict[str, Any]:
        keys = ("total_steps", "init_lr", "min_lr", "warmup_lr", "warmup_steps", "lr_decay_rate")
        return {"name": type(self).__name__, **{k: getattr(self, k) for k in keys}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (the schedule is pure); settings that differ were changed on purpose."""


@registry.register_lr_scheduler("linear_warmup_cosine_lr")
class LinearWarmupCosineLR(LRScheduler):
    """Cosine from ``init_lr`` (end of warm-up) to ``min_lr`` at the last step of the run."""

    def decay(self, epoch: int, step: int) -> float:
        span = max(1, self.total_steps - 1 - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.init_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


@registry.register_lr_scheduler("linear_warmup_step_lr")
class LinearWarmupStepLR(LRScheduler):
    """``init_lr * lr_decay_rate ** epoch``, never below ``min_lr`` (BLIP pre-training)."""

    def __init__(self, optimizer: torch.optim.Optimizer, **kw: Any) -> None:
        super().__init__(optimizer, **kw)
        if self.lr_decay_rate is None:
            raise ConfigError("run.lr_sched=linear_warmup_step_lr needs run.lr_decay_rate (BLIP pre-training uses 0.9)")

    def decay(self, epoch: int, step: int) -> float:
        return max(self.min_lr, self.init_lr * float(self.lr_decay_rate) ** epoch)


@registry.register_lr_scheduler("constant_lr")
class ConstantLR(LRScheduler):
    """``init_lr`` after the warm-up."""

    def decay(self, epoch: int, step: int) -> float:
        return self.init_lr


def build_lr_scheduler(optimizer: torch.optim.Optimizer, run_cfg: Any, total_steps: int) -> LRScheduler:
    """The schedule named by ``run.lr_sched``, configured from the run keys."""
    cls = registry.get_lr_scheduler_class(run_cfg.lr_sched)
    return cls(
        optimizer,
        total_steps=total_steps,
        init_lr=float(run_cfg.init_lr),
        min_lr=float(run_cfg.get("min_lr", 0.0) or 0.0),
        warmup_lr=float(run_cfg.get("warmup_lr", 0.0) or 0.0),
        warmup_steps=int(run_cfg.get("warmup_steps", 0) or 0),
        lr_decay_rate=run_cfg.get("lr_decay_rate"),
    )
