"""The optimizer: AdamW with weight decay on weight matrices only (BLIP / LAVIS recipe)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lavislite.common.errors import ConfigError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: decayed weights, and biases / norm weights / any 1-d parameter without decay.

    Frozen parameters (``requires_grad=False``) are left out.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name.endswith(".bias") or "norm" in name.lower() or ".ln" in name or ".bn" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, run_cfg: Any) -> torch.optim.Optimizer:
    """``run.optimizer`` (adamw) over ``model``'s trainable parameters."""
    name = str(run_cfg.get("optimizer", "adamw")).lower()
    if name != "adamw":
        raise ConfigError(f"run.optimizer={name!r} is not supported; use adamw (the BLIP recipe)")
    groups = param_groups(model, run_cfg.get("weight_decay", 0.05))
    if not groups:
        raise ConfigError("the model has no trainable parameters (all requires_grad=False); nothing to train")
    return torch.optim.AdamW(
        groups,
        lr=float(run_cfg.init_lr),
        betas=(float(run_cfg.get("beta1", 0.9)), float(run_cfg.get("beta2", 0.999))),
    )
