"""Which model made an index, and loading it again: a :class:`ModelSpec` (name, type, checkpoint,
tokenizer, config overrides) plus the digest of the loaded weights.

The digest hashes the fp32 state dict (names, shapes, bytes), so two checkpoint files with the same
weights agree and a fine-tuned copy under the same name does not; it is taken before any cast to bf16.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from lavislite.common.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """How to load a model: ``NAME:TYPE`` or a model ``folder`` (a training run's or ``lavislite export``'s),
    with optional checkpoint, tokenizer dir and ``--option`` overrides."""

    name: str
    model_type: str
    checkpoint: str | None = None
    tokenizer: str | None = None
    options: tuple[str, ...] = field(default_factory=tuple)
    folder: str | None = None

    @property
    def label(self) -> str:
        """How messages name the model, in the form the command line takes it back."""
        if self.folder:
            return f"--model {self.folder} (a {self.name} model)"
        return f"{self.name}:{self.model_type}" + (f" --checkpoint {self.checkpoint}" if self.checkpoint else "")

    @property
    def model_arg(self) -> str:
        """The ``--model`` value: the folder, or ``NAME:TYPE``."""
        return self.folder or f"{self.name}:{self.model_type}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["options"] = list(self.options)
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> ModelSpec:
        return ModelSpec(d["name"], d["model_type"], d.get("checkpoint"), d.get("tokenizer"), tuple(d.get("options") or ()),
                         d.get("folder"))

    @staticmethod
    def from_args(model: str, checkpoint: str | None = None, tokenizer: str | None = None, options: Any = ()) -> ModelSpec:
        """From ``--model NAME:TYPE|FOLDER`` and the other model flags (paths made absolute; URLs stay as given)."""
        from lavislite.inference.options import parse_model
        from lavislite.models.folder import find, read_config

        def absolute(p: str | None) -> str | None:
            return os.path.abspath(p) if p and os.path.exists(p) else p

        folder = find(model)
        if folder is not None:
            cfg = read_config(folder).model
            return ModelSpec(str(cfg.arch), str(cfg.model_type), absolute(checkpoint), absolute(tokenizer), tuple(options or ()),
                             os.path.abspath(folder))
        name, mtype = parse_model(model)
        return ModelSpec(name, mtype, absolute(checkpoint), absolute(tokenizer), tuple(options or ()))


@dataclass
class LoadedModel:
    """A model in eval mode with its eval processors, the spec it came from and its weights digest."""

    model: Any
    vis: Any
    txt: Any
    spec: ModelSpec
    digest: str
    device: torch.device
    dtype: torch.dtype

    def images(self, pils: list) -> torch.Tensor:
        """PIL images -> one model-ready batch."""
        return torch.stack([self.vis(im) for im in pils]).to(self.device, dtype=self.dtype)


def weights_digest(model: torch.nn.Module) -> str:
    """blake2b of the state dict as fp32 (first 16 hex digits are plenty to tell models apart)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype).contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def pick_dtype(requested: str, model: torch.nn.Module, device: torch.device) -> torch.dtype:
    """``fp32``/``bf16``/``fp16``, or ``auto``: bf16 where it pays — on a GPU, and on a CPU for models of at
    least 50M parameters (full-size BLIP's captioning measured 2.4x faster in bf16 on a 2-core CPU; the
    tiny demo models gain under 10% and keep fp32)."""
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if requested in table:
        return table[requested]
    if requested != "auto":
        raise ConfigError(f"--dtype {requested!r}: use auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        return torch.bfloat16
    big = sum(p.numel() for p in model.parameters()) >= 50_000_000
    return torch.bfloat16 if big else torch.float32


def load_spec(spec: ModelSpec, device: str | None = None, dtype: str = "fp32") -> LoadedModel:
    """Load ``spec`` in fp32 (the digest is of fp32 weights), then cast to ``dtype`` (``auto`` allowed)."""
    from lavislite.common.utils import resolve_device
    from lavislite.inference.loading import load

    args = argparse.Namespace(model=spec.model_arg, checkpoint=spec.checkpoint, tokenizer=spec.tokenizer,
                              option=list(spec.options), device=device, dtype="fp32", command=None)
    dev = resolve_device(device, what="--device")
    ld = load(args, dev)
    model = ld.model.eval()
    digest = weights_digest(model)
    dt = pick_dtype(dtype, model, dev)
    if dt != torch.float32:
        model = model.to(dt)
    return LoadedModel(model, ld.vis_processors["eval"], ld.txt_processors["eval"], spec, digest, dev, dt)
