"""Per-part precision: one dtype for the model, one per submodule, or a policy (frozen parts in half).

``apply_dtype(model, spec)`` takes

- a dtype (``torch.bfloat16``) or its name (``"bf16"``, ``"fp16"``, ``"fp32"``): the whole model;
- a mapping ``{submodule name: dtype}`` (``{"visual_encoder": "bf16"}``; ``""`` is the whole model): the
  longer name wins where two nest, and anything not named keeps its dtype;
- a policy: ``"frozen_bf16"`` / ``"frozen_fp16"`` / ``"frozen_half"`` (bf16 where the device supports it,
  else fp16) put every part whose parameters are all frozen (``requires_grad=False`` when it is applied,
  e.g. a frozen vision encoder or language model) in half precision and keep trainable parts in fp32.

Where a part runs in another dtype than the module around it, its floating-point inputs are cast to its
dtype on the way in and its floating-point outputs back to the outer dtype on the way out, so a model
whose parts differ in precision needs no casts of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
from torch import nn

from lavislite.common.errors import ConfigError

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}
POLICIES = ("frozen_bf16", "frozen_fp16", "frozen_half")


def to_dtype(value: Any) -> torch.dtype:
    """A ``torch.dtype`` from a dtype or one of the names in ``DTYPES``."""
    if isinstance(value, torch.dtype):
        return value
    try:
        return DTYPES[str(value)]
    except KeyError:
        raise ConfigError(
            f"dtype {value!r} is not one of {', '.join(DTYPES)} (or a policy: {', '.join(POLICIES)}, or a mapping "
            "{submodule name: dtype})"
        ) from None


def half_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """bf16 where the device computes it (CPU, recent GPUs), else fp16."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def apply_dtype(model: nn.Module, spec: Any) -> nn.Module:
    """Cast ``model`` (in place) as ``spec`` says (see the module docstring); None leaves it as it is."""
    if spec is None:
        return model
    if isinstance(spec, Mapping):
        plan = {str(name): to_dtype(dtype) for name, dtype in spec.items()}
    elif isinstance(spec, str) and spec in POLICIES:
        plan = _frozen_plan(model, spec)
    else:
        return model.to(to_dtype(spec))
    base = _dtype_of(model)
    for name in sorted(plan, key=len):  # outer parts first, so a nested entry overrides its parent's
        _target(model, name).to(plan[name])
    for name, dtype in plan.items():
        parents = [p for p in plan if p == "" or name.startswith(p + ".")]
        outer = plan[max(parents, key=len)] if name and parents else base
        if name and dtype != outer:
            _cast_at_boundary(model.get_submodule(name), dtype, outer)
    return model


def _frozen_plan(model: nn.Module, policy: str) -> dict[str, torch.dtype]:
    """The outermost submodules whose parameters are all frozen -> the policy's half dtype."""
    half = {"frozen_bf16": torch.bfloat16, "frozen_fp16": torch.float16}.get(policy) or half_dtype(_device_of(model))
    plan: dict[str, torch.dtype] = {}
    for name, module in model.named_modules():
        if not name or any(name.startswith(done + ".") for done in plan):
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            plan[name] = half
    return plan


def _target(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = ", ".join(n for n, _ in model.named_children())
        raise ConfigError(
            f"dtype mapping key {name!r} names no submodule of {type(model).__name__}; its top-level parts are: {children}"
        ) from None


def _dtype_of(module: nn.Module) -> torch.dtype:
    for t in module.parameters(recurse=False):
        if t.is_floating_point():
            return t.dtype
    for t in module.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _device_of(module: nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with every floating-point tensor in it (tuples, lists, dicts, dataclasses) cast to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_cast(v, dtype) for v in value)
    if isinstance(value, dict):
        cast = {k: _cast(v, dtype) for k, v in value.items()}
        try:
            return type(value)(**cast) if type(value) is not dict else cast
        except TypeError:
            return cast
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _cast(getattr(value, f.name), dtype) for f in dataclasses.fields(value) if f.init})
    return value


def _cast_at_boundary(module: nn.Module, inner: torch.dtype, outer: torch.dtype) -> None:
    """Inputs to ``inner`` on the way in, outputs back to ``outer`` on the way out."""

    def inputs(_mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return _cast(args, inner), _cast(kwargs, inner)

    def outputs(_mod: nn.Module, _args: tuple, _kwargs: dict, out: Any) -> Any:
        return _cast(out, outer)

    module.register_forward_pre_hook(inputs, with_kwargs=True)
    module.register_forward_hook(outputs, with_kwargs=True)
