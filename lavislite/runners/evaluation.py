"""Evaluate one split: every rank runs its shard, results are gathered over the process group and
de-duplicated, rank 0 scores them (``task.after_evaluation``) and the metrics reach every rank."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from lavislite.common import dist
from lavislite.common.errors import ConfigError

logger = logging.getLogger(__name__)


def evaluate_split(
    task: Any, model: nn.Module, loader: DataLoader, split: str, run_dir: Path | None, epoch: Any
) -> dict[str, float]:
    """Metrics of ``split``; also written to ``<run_dir>/<split>_metrics.json`` by rank 0."""
    model.eval()
    results = task.evaluation(model, loader, split)
    if results is None:
        raise ConfigError(f"{type(task).__name__}.evaluation returned None for split {split!r}; it must return a list of result dicts")
    merged = dist.gather_results(results, getattr(task, "result_id_key", "instance_id"))
    metrics: dict[str, float] | None = None
    error: str | None = None
    if dist.is_main_process():
        try:
            metrics = task.after_evaluation(merged, split, run_dir, epoch) or {}
            write_split_metrics(run_dir, split, epoch, metrics, len(merged))
        except Exception as exc:  # tell the other ranks instead of leaving them at the broadcast
            error = f"{type(exc).__name__}: {exc}"
            if not dist.is_dist_initialized():
                raise
            logger.exception("after_evaluation failed on split %s", split)
    metrics, error = dist.broadcast_object((metrics, error))
    if error:
        raise RuntimeError(f"scoring split {split!r} failed on rank 0: {error}")
    logger.info("%s (epoch %s, %d samples): %s", split, epoch, len(merged), _fmt(metrics))
    return dict(metrics)


def write_split_metrics(run_dir: Path | None, split: str, epoch: Any, metrics: dict[str, Any], n: int) -> None:
    if run_dir is None:
        return
    path = Path(run_dir) / f"{split}_metrics.json"
    data = {"split": split, "epoch": epoch, "num_samples": n, "metrics": metrics}
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=float) + "\n", encoding="utf-8")


def _fmt(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(metrics.items()))


# -- one call from Python ---------------------------------------------------------------------------
def evaluate(
    model: nn.Module,
    data: Any,
    task: Any = None,
    *,
    split: str = "test",
    data_options: dict | None = None,
    vis_processor: Any = None,
    text_processor: Any = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    output_dir: str | Path | None = None,
    scores: bool = False,
    **run_keys: Any,
) -> dict[str, float] | tuple[dict[str, float], dict[str, Any]]:
    """Evaluate ``model`` on one split in one call; the metrics a project run reports for that split.

    ``data``: a Dataset (the split itself), a dataset builder (instance, or registered name with
    ``data_options`` merged onto its default config), the ``{split: Dataset}`` a builder returns, or a
    project yaml / run config whose ``datasets:`` (and ``run.task`` when ``task`` is None) are used.
    ``task``: a registered task name (``"retrieval"``, ``"captioning"``, ``"vqa"``, ...) or a task object.
    ``vis_processor`` / ``text_processor``: replace a builder's eval processors (e.g. the model's own,
    from ``load_model_and_preprocess``). ``run_keys``: the task's run keys (``k_test=16``, ``num_beams=3``).
    ``scores=True`` also returns the task's score matrices of the split (retrieval: ``i2t``, ``t2i``;
    video retrieval: ``v2t``, ``t2v``). ``output_dir``: where the task writes its predictions files.
    ``batch_size`` / ``num_workers``: of the loader (default: the project's, else ``run.batch_size_eval`` and
    ``run.num_workers`` of the defaults).
    """
    from omegaconf import OmegaConf

    from lavislite.runners.data import build_loader

    cfg, run = _run_config(data, task, run_keys, batch_size, num_workers)
    task_obj = _task(task, cfg)
    dataset = _split_of(data, cfg, task_obj, split, data_options, vis_processor, text_processor)
    loader = build_loader(dataset, OmegaConf.create(dict(run)), train=False, rank=dist.get_rank(), world_size=dist.get_world_size())
    out = Path(output_dir) if output_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_split(task_obj, model, loader, split, out, "evaluate")
    if not scores:
        return metrics
    matrices = getattr(task_obj, "scores", {}).get(split)
    if matrices is None:
        raise ConfigError(f"task {type(task_obj).__name__} keeps no score matrices; scores=True needs a ranking task (retrieval, video_retrieval)")
    return metrics, matrices


def _run_config(data: Any, task: Any, run_keys: dict, batch_size: int | None, num_workers: int | None) -> tuple[Any, dict]:
    """The run config: a project's (``data`` a yaml or config), else the defaults; ``run_keys`` on top."""
    from omegaconf import DictConfig, OmegaConf

    from lavislite.common.config import DEFAULT_CONFIG, build_run_config, load_yaml

    if isinstance(data, (str, Path)) and Path(data).suffix in (".yaml", ".yml"):
        cfg = build_run_config(data, [])
    elif isinstance(data, (dict, DictConfig)) and "datasets" in data:
        cfg = OmegaConf.create(data)
        cfg = OmegaConf.merge(load_yaml(DEFAULT_CONFIG), cfg)
    else:
        cfg = load_yaml(DEFAULT_CONFIG)
    name = task if isinstance(task, str) else cfg.run.get("task")
    if isinstance(name, str):
        from lavislite.common.registry import registry

        defaults = getattr(registry.get_task_class(name), "RUN_DEFAULTS", {}) or {}
        cfg = OmegaConf.merge(cfg, {"run": {**{k: v for k, v in defaults.items() if k not in cfg.run}, "task": name}})
    unknown = sorted(k for k in run_keys if k not in cfg.run)
    if unknown:
        raise ConfigError(f"evaluate(): unknown run key(s) {unknown} for task {name!r}; valid: {', '.join(sorted(map(str, cfg.run)))}")
    loader = {k: int(v) for k, v in (("batch_size_eval", batch_size), ("num_workers", num_workers)) if v is not None}
    cfg = OmegaConf.merge(cfg, {"run": {**run_keys, **loader}})
    return cfg, OmegaConf.to_container(cfg.run, resolve=True)


def _task(task: Any, cfg: Any) -> Any:
    from lavislite.common.registry import registry

    if task is not None and not isinstance(task, str):
        return task
    if not cfg.run.get("task"):
        raise ConfigError("evaluate(): say which task scores the model, e.g. task='retrieval' (or give a project yaml with run.task)")
    return registry.get_task_class(cfg.run.task).setup_task(cfg)


def _split_of(data: Any, cfg: Any, task: Any, split: str, data_options: dict | None, vis: Any, text: Any) -> Any:
    """The Dataset of ``split`` from whatever ``data`` is (see :func:`evaluate`)."""
    from omegaconf import DictConfig, OmegaConf
    from torch.utils.data import Dataset

    from lavislite.common.registry import registry
    from lavislite.runners.data import merge_split

    is_builder = isinstance(data, str) and Path(data).suffix not in (".yaml", ".yml") or hasattr(data, "build_split")
    if (vis is not None or text is not None) and not is_builder:
        raise ConfigError("evaluate(): vis_processor/text_processor replace a dataset builder's processors; a built Dataset "
                          "keeps its own, and a project config sets them in its datasets: section")
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, Path)) and Path(data).suffix in (".yaml", ".yml") or isinstance(data, (dict, DictConfig)) and "datasets" in data:
        found = merge_split(task.build_datasets(cfg), split, train=False)
    else:
        if isinstance(data, str):
            builder_cls = registry.get_builder_class(data)
            data = builder_cls(OmegaConf.merge(builder_cls.default_config(), data_options or {}))
        elif data_options:
            raise ConfigError("evaluate(): data_options go with a builder name, e.g. evaluate(model, 'coco_retrieval', data_options={...})")
        if hasattr(data, "build_split"):  # only the split asked for: the others may need downloads
            data.use_eval_processors(vis, text)
            if split not in data.splits():
                raise ConfigError(f"evaluate(): {data.label} has no annotations for split {split!r}; set build_info.annotations.{split}.path")
            data = {split: data.build_split(split)}
        if not isinstance(data, dict):
            raise ConfigError(f"evaluate(): data must be a Dataset, a dataset builder or its name, {{split: Dataset}}, or a project yaml; got "
                              f"{type(data).__name__}")
        found = data.get(split)
    if found is None:
        raise ConfigError(f"evaluate(): no {split!r} split in the data; pass split= one of the configured splits")
    return found
