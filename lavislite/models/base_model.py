"""The base class of every lavislite model: a variant table, config construction and checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from lavislite.common.errors import ConfigError

logger = logging.getLogger(__name__)

# A config's ``strict_load`` -> load_checkpoint's ``strict``. In a yaml, ``false`` (every shipped yaml)
# keeps its old meaning, "tolerate a partial load", which now stops short of garbage; ``any`` loads anything
# (not ``off``: yaml reads that as false).
_STRICTNESS = {True: True, "exact": True, False: None, None: None, "partial": None, "any": False}


def strictness(value: Any) -> bool | None:
    """The ``strict`` argument of ``load_checkpoint`` for a config's ``strict_load`` value."""
    try:
        return _STRICTNESS[value]
    except (KeyError, TypeError):
        raise ConfigError(
            f"model.strict_load={value!r}; use true/exact (every key must fit), false/partial (the default: partial "
            "loads allowed, garbage refused) or any (load whatever fits)"
        ) from None


class BaseModel(nn.Module):
    """An ``nn.Module`` built from a config, with named variants (model types).

    Subclasses fill ``PRETRAINED_MODEL_CONFIG_DICT`` (model_type -> yaml path relative to
    ``lavislite/configs``) and implement ``from_config``. Adding a variant is one yaml file and one
    row of that table.
    """

    PRETRAINED_MODEL_CONFIG_DICT: ClassVar[dict[str, str]] = {}
    # Registered checkpoint converters (registry.register_checkpoint_converter) the loader tries, in
    # order, on every checkpoint this model reads; the first whose detect() accepts the keys rewrites them.
    checkpoint_converters: ClassVar[tuple[str, ...]] = ()
    load_report: Any = None  # the LoadReport of the last checkpoint loaded (None: random weights)

    @classmethod
    def model_types(cls) -> list[str]:
        return sorted(cls.PRETRAINED_MODEL_CONFIG_DICT)

    @classmethod
    def default_config_path(cls, model_type: str) -> Path:
        """The yaml of ``model_type``; a clear error lists the valid types."""
        from lavislite.common.config import CONFIG_ROOT

        table = cls.PRETRAINED_MODEL_CONFIG_DICT
        if model_type not in table:
            import difflib

            close = difflib.get_close_matches(str(model_type), list(table), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{cls.__name__} has no model type {model_type!r}.{hint} Valid types: {', '.join(sorted(table)) or '(none)'}"
            )
        path = Path(table[model_type])
        return path if path.is_absolute() else CONFIG_ROOT / path

    @classmethod
    def from_config(cls, cfg: Any) -> "BaseModel":
        """Build the model from its (merged, validated) ``model`` config section."""
        raise NotImplementedError(f"{cls.__name__} must implement from_config(cfg)")

    @classmethod
    def from_pretrained(cls, model_type: str, **overrides: Any) -> "BaseModel":
        """Build ``model_type`` from its yaml (with keyword overrides) and load its weights."""
        from lavislite.common.config import model_type_config

        cfg = model_type_config(cls, model_type, overrides)
        return cls.from_config(cfg.model)

    def example_samples(self, batch_size: int = 2) -> dict[str, Any]:
        """A random batch that ``forward`` accepts (inference-only heads: their main method).

        The smoke test runs every registered ``tiny`` model type through it, so a new head is tested
        the day it registers.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement example_samples(batch_size)")

    # -- checkpoints -----------------------------------------------------------------------
    def load_checkpoint(self, source: str | Path, strict: bool | None = None, **kwargs: Any) -> Any:
        """Load weights from a URL, a file (.pth/.bin/.safetensors) or a transformers directory/hub id.

        ``strict``: True = exact fit, None = partial loads allowed but garbage refused, False = load what
        fits (see ``lavislite.common.checkpoint.load_checkpoint``). Returns the loader's report (missing,
        unexpected and shape-mismatched keys), also kept as ``self.load_report``.
        """
        from lavislite.common.checkpoint import load_checkpoint

        self.load_report = load_checkpoint(self, source, strict=strict, **kwargs)
        return self.load_report

    @staticmethod
    def checkpoint_source(cfg: Any) -> Any:
        """``checkpoint`` if given, else ``finetuned`` or ``pretrained`` as the config says, else None."""
        source = cfg.get("checkpoint")
        if not source:
            if cfg.get("load_finetuned", False) and cfg.get("finetuned"):
                source = cfg.finetuned
            elif cfg.get("load_pretrained", False) and cfg.get("pretrained"):
                source = cfg.pretrained
        return source or None

    def load_checkpoint_from_config(self, cfg: Any, **kwargs: Any) -> Any:
        """Load the config's checkpoint (:meth:`checkpoint_source`), if any."""
        source = self.checkpoint_source(cfg)
        if not source:
            logger.info("%s: no checkpoint requested; weights stay randomly initialised", type(self).__name__)
            return None
        return self.load_checkpoint(source, strict=strictness(cfg.get("strict_load")), **kwargs)

    @classmethod
    def build_and_load(cls, cfg: Any, build: Callable[[], "BaseModel"], *, skip_init: bool = True) -> "BaseModel":
        """``build()`` the model, then load the config's checkpoint: the body of every ``from_config``.

        When a checkpoint is given (and ``skip_init``), the modules are built on the meta device, so no
        time goes into random weights the checkpoint overwrites; the loader hands them the checkpoint's
        tensors. Whatever the checkpoint does not cover is initialised exactly as the plain path would
        (``build()`` again, from the same random state). The loaded weights equal those of
        ``build()`` + :meth:`load_checkpoint`.
        """
        if not (skip_init and cls.checkpoint_source(cfg)):
            model = build()
            model.load_checkpoint_from_config(cfg)
        else:
            rng = torch.random.get_rng_state()
            with torch.device("meta"):
                model = build()

            def build_fresh() -> "BaseModel":
                torch.random.set_rng_state(rng)  # nothing drew from it since: this continues the same stream
                return build()

            model.load_checkpoint_from_config(cfg, build_fresh=build_fresh)
        model._model_cfg = cfg  # what save_pretrained writes: the model rebuilds from it
        return model

    def save_pretrained(self, out_dir: str | Path, *, preprocess: Any = None) -> Path:
        """Write this model as a model folder that ``load_model(out_dir)`` loads with no other argument.

        See :mod:`lavislite.models.folder` for the layout (weights, config, processors, tokenizer).
        """
        from lavislite.models import folder

        return folder.save(self, out_dir, preprocess=preprocess)

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hook for the checkpoint loader: rewrite a foreign state dict before loading (e.g. NLVR)."""
        return state_dict

    # -- conveniences ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
