"""The base task: builds the model and datasets of a run, defines a training step and an evaluation.

A task subclass usually overrides ``valid_step`` (one result dict per sample, carrying the sample's
unique id under ``result_id_key``) and ``after_evaluation`` (score the gathered results, write
predictions). The runner gathers results across ranks and de-duplicates them by id before
``after_evaluation``, which runs on rank 0 only; the runner writes ``<split>_metrics.json``.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from lavislite.common import dist
from lavislite.common.config import get_cache_dir
from lavislite.common.errors import ConfigError
from lavislite.common.logging import progress
from lavislite.common.registry import registry
from lavislite.common.utils import device_of, write_json

logger = logging.getLogger(__name__)


class BaseTask:
    """Model + datasets + train step + evaluation of one kind of job."""

    RUN_DEFAULTS: ClassVar[dict] = {}
    select_metric: str = "agg_metrics"  # validation metric that picks the best checkpoint
    result_id_key: str = "instance_id"  # the unique per-sample key of valid_step's results
    requires: ClassVar[tuple[type, ...]] = ()  # protocols of lavislite.models.protocols the model must satisfy

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.run_cfg = cfg.run if cfg is not None and "run" in cfg else cfg
        self.scores: dict[str, dict[str, Any]] = {}  # split -> score matrices of its last evaluation (ranking tasks)

    @classmethod
    def setup_task(cls, cfg: Any) -> "BaseTask":
        return cls(cfg)

    def run_key(self, key: str) -> Any:
        """``run.<key>`` of the config, else this task's ``RUN_DEFAULTS[key]``."""
        return self.run_cfg.get(key, self.RUN_DEFAULTS[key]) if self.run_cfg is not None else self.RUN_DEFAULTS[key]

    # -- building -----------------------------------------------------------------------------------
    def build_model(self, cfg: Any) -> nn.Module:
        """``registry.get_model_class(cfg.model.arch).from_config(cfg.model)``, checked by :meth:`check_model`."""
        if "model" not in cfg or not cfg.model.get("arch"):
            raise ConfigError("the run config has no model.arch; add a model: section with arch and model_type")
        model = registry.get_model_class(cfg.model.arch).from_config(cfg.model)
        self.check_model(model)
        return model

    def check_model(self, model: Any) -> None:
        """Raise a :class:`ConfigError` naming the method and the model class when ``model`` lacks a
        method of ``requires`` (the runner calls this before it reads any data)."""
        from lavislite.models.protocols import require

        name = self.run_cfg.get("task") if self.run_cfg is not None else None
        require(model, self.requires, by=f"task {name!r}" if name else f"task {type(self).__name__}")

    def build_datasets(self, cfg: Any) -> dict[str, dict[str, Any]]:
        """``{dataset name: {split: Dataset}}``, one registered builder per ``cfg.datasets`` entry.

        ``run.skip_bad_samples`` reaches each builder as the ``skip_bad_samples`` keyword when its
        constructor takes one, else as the attribute of that name before ``build_datasets()``.
        """
        sections = cfg.get("datasets") or {}
        if not sections:
            raise ConfigError("the run config's datasets: section is empty or missing; name at least one registered dataset "
                              "builder, e.g. datasets: {coco_caption: {}}")
        skip = bool(cfg.run.get("skip_bad_samples", False)) if "run" in cfg else False
        cache_dir = get_cache_dir(cfg)
        out: dict[str, dict[str, Any]] = {}
        for name, ds_cfg in sections.items():
            builder_cls = registry.get_builder_class(name)
            params = inspect.signature(builder_cls).parameters
            if "skip_bad_samples" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
                builder = builder_cls(ds_cfg, cache_dir, skip_bad_samples=skip)
            else:
                builder = builder_cls(ds_cfg, cache_dir)
                builder.skip_bad_samples = skip
            splits = builder.build_datasets()
            if not isinstance(splits, dict) or not splits:
                raise ConfigError(f"dataset builder {name!r} built no splits (got {splits!r}); check datasets.{name}.build_info")
            out[str(name)] = splits
        return out

    # -- training -----------------------------------------------------------------------------------
    def train_step(self, model: nn.Module, samples: dict[str, Any]) -> dict[str, Any]:
        """``model(samples)``; returns ``{"loss": tensor, ...}`` with every scalar ``loss_*`` too."""
        output = model(samples)
        if isinstance(output, torch.Tensor):
            return {"loss": output}
        if isinstance(output, dict):
            items = dict(output)
        else:
            items = {k: getattr(output, k) for k in dir(output) if k.startswith("loss") and not k.startswith("_")}
        if items.get("loss") is None:
            raise ConfigError(
                f"{type(model).__name__}.forward returned {type(output).__name__} without a 'loss'; the model must return its training loss"
            )
        return {k: v for k, v in items.items() if k.startswith("loss") and v is not None}

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluation(self, model: nn.Module, data_loader: Any, split: str) -> list[dict]:
        """``valid_step`` over every batch of this rank's shard, without autograd."""
        results: list[dict] = []
        device = device_of(model)
        from lavislite.runners.loop import move_to

        with torch.inference_mode():
            for samples in progress(data_loader, desc=f"eval {split}", enabled=dist.is_main_process()):
                results.extend(self.valid_step(model, move_to(samples, device)))
        return results

    def valid_step(self, model: nn.Module, samples: dict[str, Any]) -> list[dict]:
        """One result dict per sample, with ``result_id_key``."""
        raise NotImplementedError(f"{type(self).__name__} must implement valid_step(model, samples) -> list[dict]")

    def after_evaluation(self, results: list[dict], split: str, output_dir: Path | None, epoch: Any) -> dict[str, float]:
        """Score the gathered, de-duplicated ``results`` (rank 0); return ``{metric: value}``."""
        raise NotImplementedError(f"{type(self).__name__} must implement after_evaluation(results, split, output_dir, epoch) -> dict")

    # -- helpers for subclasses -------------------------------------------------------------------
    @staticmethod
    def save_predictions(results: list[dict], output_dir: Path | None, split: str, epoch: Any) -> Path | None:
        """Write ``<output_dir>/result/<split>_epoch<epoch>.json`` (rank 0 calls this)."""
        if output_dir is None:
            return None
        tag = str(epoch).replace(" ", "_").replace("(", "").replace(")", "")
        return write_json(Path(output_dir) / "result" / f"{split}_epoch{tag}.json", results)


def setup_task(cfg: Any) -> BaseTask:
    """The task named by ``cfg.run.task``, built from the full run config."""
    name = cfg.run.get("task")
    if not name:
        raise ConfigError("run.task is not set; name a registered task (lavislite.registry.list_tasks())")
    cls = registry.get_task_class(name)
    return cls.setup_task(cfg) if hasattr(cls, "setup_task") else cls(cfg)
