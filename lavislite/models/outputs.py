"""Output containers of the BLIP heads (LAVIS's names, so LAVIS users can switch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class BlipOutput:
    """Training output: the total loss and its parts (None where a head has no such loss)."""

    loss: torch.Tensor
    loss_itc: torch.Tensor | None = None
    loss_itm: torch.Tensor | None = None
    loss_lm: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """The losses as floats, for logging."""
        out = {"loss": float(self.loss.detach())}
        for name in ("loss_itc", "loss_itm", "loss_lm"):
            value = getattr(self, name)
            if value is not None:
                out[name] = float(value.detach())
        return out


@dataclass
class BlipOutputFeatures:
    """``extract_features`` output. ``*_proj`` are the projected, L2-normalised embeddings."""

    image_embeds: torch.Tensor | None = None
    image_embeds_proj: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    text_embeds_proj: torch.Tensor | None = None
    multimodal_embeds: torch.Tensor | None = None
