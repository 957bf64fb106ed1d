"""Shared helpers of the runner tests: a project yaml for the toy regression plugins."""

from __future__ import annotations

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def project(tmp_path: Path, name: str = "toy", **run) -> Path:
    """A project yaml using the toy model/data/task; ``run`` keys override the small defaults below."""
    keys = {
        "task": "toy_regression_task",
        "runner": "runner_base",
        "imports": ["tests.helpers.runner_toys"],
        "output_dir": str(tmp_path / "out"),
        "num_workers": 0,
        "batch_size_train": 8,
        "batch_size_eval": 5,
        "max_epoch": 3,
        "init_lr": 0.02,
        "min_lr": 0.001,
        "warmup_steps": 3,
        "warmup_lr": 0.001,
        "log_freq": 2,
        "valid_splits": ["val"],
        "test_splits": ["test"],
        "min_free_space_mb": 1,
        "device": "cpu",
    }
    keys.update(run)
    lines = ["model:", "  arch: toy_regressor", "  model_type: default", "datasets:", "  toy_regression: {}", "run:"]
    for k, v in keys.items():
        lines.append(f"  {k}: {_yaml(v)}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _yaml(v):
    import json

    return json.dumps(v) if v is not None else "null"


def weights(run_dir: str | Path, name: str = "checkpoint_latest.pth") -> dict[str, torch.Tensor]:
    return torch.load(Path(run_dir) / name, map_location="cpu", weights_only=True)["model"]
