"""The epoch-based runner: set up, train epoch by epoch, validate, keep the best, test.

The loop itself lives in ``loop.train_epoch``; loaders in ``data``; checkpoints in ``checkpointing``;
evaluation in ``evaluation``; the run directory in ``rundir``. This class only wires them together.
``runner_iter`` differs by one method: how many iterations each epoch has.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from lavislite.common import dist
from lavislite.common.config import save_config
from lavislite.common.errors import ConfigError
from lavislite.common.logging import MetricsLog, remove_handler, setup_run_logging
from lavislite.common.registry import registry
from lavislite.common.utils import resolve_device
from lavislite.runners import checkpointing as ckpt
from lavislite.runners.data import BatchStream, build_loader, merge_split
from lavislite.runners.evaluation import evaluate_split
from lavislite.runners.loop import TrainContext, amp_dtype, make_scaler, steps_in_epoch, train_epoch
from lavislite.runners.lr_schedulers import build_lr_scheduler
from lavislite.runners.optim import build_optimizer
from lavislite.runners.rundir import prepare_run_dir
from lavislite.tasks.base_task import BaseTask

logger = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@registry.register_runner("runner_base")
class EpochRunner:
    """Train for ``run.max_epoch`` passes over the train split."""

    RUN_DEFAULTS: dict = {}

    def __init__(self, cfg: Any, task: Any, model: nn.Module, datasets: dict[str, dict[str, Any]]) -> None:
        self.cfg = cfg
        self.run_cfg = cfg.run
        self.task = task
        self.model = model  # the bare model; self.train_model is the (maybe DDP-wrapped) one
        if isinstance(task, BaseTask):  # a model without a method the task calls fails here, before any data is read
            task.check_model(model)
        self.datasets = datasets
        self.device = resolve_device(self.run_cfg.get("device"))
        dist.init_distributed(self.run_cfg, self.device)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.run_dir: Path | None = None
        self._log_handler: logging.Handler | None = None

    # -- what differs between runners -------------------------------------------------------------
    def epoch_lengths(self, train_loader: Any) -> list[int]:
        """Iterations of each epoch: a full pass over the train loader, ``run.max_epoch`` times."""
        try:
            n = len(train_loader)
        except TypeError as exc:
            raise ConfigError(
                "runner_base needs a train dataset with a length; for streamed (webdataset) data use run.runner=runner_iter with run.max_iters"
            ) from exc
        return [n] * int(self.run_cfg.max_epoch)

    # -- entry points --------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train (or only evaluate when ``run.evaluate``); returns the run summary."""
        if self.run_cfg.get("evaluate", False):
            return self.evaluate()
        resume = self._resume_path()
        self._open_run_dir(resume)
        try:
            return self._train(resume)
        finally:
            remove_handler(self._log_handler)

    def evaluate(self) -> dict[str, Any]:
        """Evaluate ``valid_splits`` and ``test_splits`` with the current weights (or run.resume_ckpt_path's)."""
        resume = self._resume_path()
        self._open_run_dir(None)
        try:
            self.model.to(self.device)
            if resume is not None:
                ckpt.load_model_state(self.model, _model_state(resume), resume)
            splits = list(self.run_cfg.valid_splits) + list(self.run_cfg.test_splits)
            if not splits:
                raise ConfigError("evaluation needs run.valid_splits or run.test_splits (e.g. --options 'run.test_splits=[test]')")
            results = {s: self._eval(s, "eval", 0) for s in splits}
            return self._summary(None, {}, results)
        finally:
            remove_handler(self._log_handler)

    # -- setup ------------------------------------------------------------------------------------
    def _resume_path(self) -> Path | None:
        path = self.run_cfg.get("resume_ckpt_path")
        if not path:
            return None
        if str(path) == "auto":
            return ckpt.find_latest(Path(str(self.run_cfg.output_dir)).expanduser() / str(self.run_cfg.run_name))
        return Path(str(path)).expanduser()

    def _open_run_dir(self, resume: Path | None) -> None:
        self.run_dir, self.run_id = prepare_run_dir(self.run_cfg, resume)
        self._log_handler = setup_run_logging(self.run_dir, self.rank, self.world)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl" if dist.is_main_process() else None)
        if dist.is_main_process():
            save_config(self.cfg, self.run_dir / "config.yaml")
            logger.info("run dir %s (%d process(es), device %s)", self.run_dir, self.world, self.device)

    def _build_train(self) -> tuple[TrainContext, BatchStream, list[int]]:
        r = self.run_cfg
        train_set = _merge_train(self.datasets, list(r.train_splits))
        loader = build_loader(train_set, r, train=True, rank=self.rank, world_size=self.world)
        lengths = self.epoch_lengths(loader)
        accum = int(r.get("accum_grad_iters", 1) or 1)
        if accum < 1:
            raise ConfigError(f"run.accum_grad_iters must be >= 1, got {accum}")
        self.model.to(self.device)
        optimizer = build_optimizer(self.model, r)
        scheduler = build_lr_scheduler(optimizer, r, total_steps=sum(steps_in_epoch(n, accum) for n in lengths))
        dtype = amp_dtype(r.get("amp"), self.device)
        ctx = TrainContext(
            task=self.task,
            model=self.model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=make_scaler(self.device, dtype),
            device=self.device,
            amp=dtype,
            accum=accum,
            grad_clip=r.get("grad_clip"),
            log_freq=max(1, int(r.get("log_freq", 50))),
            checkpoint_every=r.get("checkpoint_every_steps"),
            metrics=self.metrics,
        )
        return ctx, BatchStream(loader, seed=int(r.seed)), lengths

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not dist.is_dist_initialized():
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=bool(self.run_cfg.get("find_unused_parameters", False)))

    # -- training ---------------------------------------------------------------------------------
    def _train(self, resume: Path | None) -> dict[str, Any]:
        ctx, stream, lengths = self._build_train()
        prog = ckpt.Progress()
        rng_states = None
        if resume is not None:
            prog, rng_states = ckpt.load_training_state(resume, model=self.model, optimizer=ctx.optimizer, scheduler=ctx.scheduler, scaler=ctx.scaler)
            self.metrics.truncate_after(prog.step)
            stream.data_epoch, stream.data_batch = prog.data_epoch, prog.data_batch
            logger.info("resumed from %s at epoch %d iteration %d (step %d)", resume, prog.epoch, prog.iter_in_epoch, prog.step)
        ctx.model = self._wrap(self.model)
        # Random streams last: nothing between here and the loop may draw from them.
        if rng_states is not None and len(rng_states) == self.world:
            ckpt.restore_rng(rng_states[self.rank])
        else:
            if rng_states is not None:
                logger.warning(
                    "checkpoint was written by %d process(es), this run has %d: RNG reseeded, the data order is kept", len(rng_states), self.world
                )
            set_seed(int(self.run_cfg.seed) + self.rank + 1000 * prog.step)
        save_latest = lambda: self._save_latest(ctx, prog)  # noqa: E731
        train_means: dict[str, float] = {}
        while prog.epoch < len(lengths):
            if prog.iter_in_epoch == 0:
                prog.epoch_meter = {}
            train_means = train_epoch(ctx, stream, lengths[prog.epoch], prog, save_latest)
            self.metrics.write({"kind": "train_epoch", "epoch": prog.epoch, "step": prog.step, **train_means})
            self._validate(prog)
            prog.epoch, prog.iter_in_epoch = prog.epoch + 1, 0
            save_latest()
        stream.close()
        tests = self._test(prog)
        self._write_model_folder(prog, tested_best=bool(tests))
        return self._summary(prog, train_means, {**prog.valid_metrics, **tests})

    def _write_model_folder(self, prog: ckpt.Progress, tested_best: bool) -> None:
        """``<run_dir>/model/``: the trained model as a folder that loads by itself (best weights when
        validation chose some, else the last), so ``--model <run_dir>`` needs no other option."""
        from lavislite.models import folder

        if prog.best_epoch is not None and not tested_best:  # _test already loaded the best weights otherwise
            best = self.run_dir / ckpt.BEST
            ckpt.load_model_state(self.model, _broadcast_model_state(best), best)
        if dist.is_main_process():
            out = folder.save(
                self.model,
                self.run_dir / folder.RUN_SUBDIR,
                model_config=self.cfg.model,
                preprocess=self.cfg.get("preprocess"),
                imports=list(self.run_cfg.get("imports") or []),
            )
            logger.info("model folder %s (load it with --model %s)", out, self.run_dir)

    def _validate(self, prog: ckpt.Progress) -> None:
        splits = list(self.run_cfg.valid_splits)
        for split in splits:
            prog.valid_metrics[split] = self._eval(split, prog.epoch, prog.step)
        if not splits:
            return
        name = self._select_metric()
        metrics = prog.valid_metrics[splits[0]]
        if name not in metrics:
            raise ConfigError(f"select metric {name!r} not among the {splits[0]} metrics {sorted(metrics)}; set run.select_metric to one of them")
        value = float(metrics[name])
        better = prog.best_metric is None or (
            value > prog.best_metric if self.run_cfg.get("select_mode", "max") == "max" else value < prog.best_metric
        )
        if better:
            prog.best_metric, prog.best_epoch = value, prog.epoch
            if dist.is_main_process():
                ckpt.save_best(self.run_dir / ckpt.BEST, self.model, prog.epoch, value)
            logger.info("new best %s %.4f at epoch %d", name, value, prog.epoch)

    def _test(self, prog: ckpt.Progress) -> dict[str, dict[str, float]]:
        splits = list(self.run_cfg.test_splits)
        if not splits:
            return {}
        label: Any = prog.epoch - 1
        if prog.best_epoch is not None:
            ckpt.load_model_state(self.model, _broadcast_model_state(self.run_dir / ckpt.BEST), self.run_dir / ckpt.BEST)
            label = prog.best_epoch
            logger.info("testing the best checkpoint (epoch %d)", prog.best_epoch)
        return {s: self._eval(s, label, prog.step) for s in splits}

    def _eval(self, split: str, epoch: Any, step: int) -> dict[str, float]:
        dataset = merge_split(self.datasets, split, train=False)
        if dataset is None:
            have = sorted({s for splits in self.datasets.values() for s in splits})
            raise ConfigError(f"split {split!r} (run.valid_splits/test_splits) is not in the datasets; they have {have}")
        loader = build_loader(dataset, self.run_cfg, train=False, rank=self.rank, world_size=self.world)
        metrics = evaluate_split(self.task, self.model, loader, split, self.run_dir, epoch)
        self.metrics.write({"kind": "eval", "split": split, "epoch": epoch, "step": step, **metrics})
        return metrics

    def _save_latest(self, ctx: TrainContext, prog: ckpt.Progress) -> None:
        rng = dist.all_gather_object(ckpt.capture_rng())
        if dist.is_main_process():
            ckpt.save_training_state(
                self.run_dir / ckpt.LATEST,
                model=self.model,
                optimizer=ctx.optimizer,
                scheduler=ctx.scheduler,
                scaler=ctx.scaler,
                progress=prog,
                rng=rng,
                config_yaml=OmegaConf.to_yaml(self.cfg),
            )

    def _select_metric(self) -> str:
        return str(self.run_cfg.get("select_metric") or getattr(self.task, "select_metric", None) or "agg_metrics")

    # -- summary ----------------------------------------------------------------------------------
    def _summary(self, prog: ckpt.Progress | None, train: dict[str, float], evals: dict[str, dict[str, float]]) -> dict[str, Any]:
        local = sum(int(getattr(d, "num_skipped", 0) or 0) for splits in self.datasets.values() for d in splits.values())
        skipped = sum(dist.all_gather_object(local))  # every rank skips its own share of the data
        if skipped:
            logger.warning("%d bad samples were skipped (run.skip_bad_samples=true); see the warnings above", skipped)
        from lavislite.models.folder import RUN_SUBDIR

        model_dir = self.run_dir / RUN_SUBDIR if prog is not None else None
        summary = {
            "run_dir": str(self.run_dir),
            "model_dir": str(model_dir) if model_dir is not None else None,
            "run_id": self.run_id,
            "select_metric": self._select_metric(),
            "best_metric": prog.best_metric if prog else None,
            "best_epoch": prog.best_epoch if prog else None,
            "steps": prog.step if prog else 0,
            "train": train,
            "metrics": evals,
            "num_skipped_samples": skipped,
        }
        if dist.is_main_process():
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        return summary


def _merge_train(datasets: dict[str, dict[str, Any]], splits: list[str]) -> Any:
    found = [d for s in splits if (d := merge_split(datasets, s, train=True)) is not None]
    if not found:
        have = sorted({s for sp in datasets.values() for s in sp})
        raise ConfigError(f"run.train_splits={splits} not found in the datasets (they have {have})")
    if len(found) == 1:
        return found[0]
    from torch.utils.data import ConcatDataset

    return ConcatDataset(found)


def _model_state(path: Path) -> dict[str, torch.Tensor]:
    data = ckpt.read(path)
    return data["model"] if isinstance(data, dict) and "model" in data else data


def _broadcast_model_state(path: Path) -> dict[str, torch.Tensor]:
    """The best weights on every rank: read locally where the file is visible, else sent by rank 0."""
    visible = dist.all_gather_object(Path(path).is_file())
    if all(visible):
        return _model_state(path)
    return dist.broadcast_object(_model_state(path) if dist.is_main_process() else None)
