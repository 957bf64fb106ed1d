"""A tiny model, dataset builder and task (linear regression on generated tensors) to test runners
without BLIP. Registered on import (``run.imports: [tests.helpers.runner_toys]``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn

from lavislite.common.registry import registry
from lavislite.models.base_model import BaseModel
from lavislite.tasks.base_task import BaseTask

HERE = Path(__file__).parent


@registry.register_model("toy_regressor", force=True)
class ToyRegressor(BaseModel):
    """Linear head with dropout, a frozen parameter and a running buffer (like a momentum queue)."""

    PRETRAINED_MODEL_CONFIG_DICT = {"default": str(HERE / "toy_model.yaml")}

    def __init__(self, dim: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1)
        self.drop = nn.Dropout(dropout)
        self.frozen = nn.Parameter(torch.ones(dim), requires_grad=False)
        self.register_buffer("running_mean", torch.zeros(dim))

    @classmethod
    def from_config(cls, cfg):
        return cls(dim=cfg.dim, dropout=cfg.dropout)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.proj(x * self.frozen)) + x
        return self.head(self.drop(h)).squeeze(-1)

    def forward(self, samples):
        x, y = samples["x"], samples["y"]
        if self.training:
            with torch.no_grad():
                self.running_mean.mul_(0.9).add_(0.1 * x.mean(0))
        pred = self.predict(x)
        loss = ((pred.float() - y) ** 2).mean()
        return {"loss": loss, "loss_mse": loss.detach()}


class ToyDataset(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, split: str) -> None:
        self.x, self.y, self.split = x, y, split

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "instance_id": f"{self.split}-{i}"}

    def collater(self, items: list[dict]) -> dict:
        return {
            "x": torch.stack([s["x"] for s in items]),
            "y": torch.stack([s["y"] for s in items]),
            "instance_id": [s["instance_id"] for s in items],
        }


@registry.register_builder("toy_regression", force=True)
class ToyBuilder:
    def __init__(self, cfg, cache_dir, skip_bad_samples: bool = False) -> None:
        self.cfg, self.cache_dir, self.skip_bad_samples = cfg, cache_dir, skip_bad_samples

    @classmethod
    def default_config_path(cls, dataset_type: str = "default") -> Path:
        return HERE / "toy_dataset.yaml"

    def build_datasets(self) -> dict:
        g = torch.Generator().manual_seed(int(self.cfg.seed))
        w = torch.randn(self.cfg.dim, generator=g)
        out = {}
        for split, n in (("train", self.cfg.n_train), ("val", self.cfg.n_val), ("test", self.cfg.n_test)):
            x = torch.randn(n, self.cfg.dim, generator=g)
            y = x @ w + self.cfg.noise * torch.randn(n, generator=g)
            out[split] = ToyDataset(x, y, split)
        return out


@registry.register_task("toy_regression_task", force=True)
class ToyTask(BaseTask):
    RUN_DEFAULTS = {"toy_fail_rank": -1, "toy_fail_step": -1, "toy_step_sleep": 0.0}
    select_metric = "neg_mse"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.calls = 0

    def train_step(self, model, samples):
        self.calls += 1
        if int(os.environ.get("RANK", "0")) == self.run_cfg.toy_fail_rank and self.calls >= self.run_cfg.toy_fail_step > 0:
            raise RuntimeError(f"toy failure on purpose at call {self.calls}")
        if self.run_cfg.toy_step_sleep:
            time.sleep(self.run_cfg.toy_step_sleep)
        return super().train_step(model, samples)

    def valid_step(self, model, samples):
        pred = model.predict(samples["x"]).float()
        return [
            {"instance_id": i, "pred": float(p), "target": float(t)}
            for i, p, t in zip(samples["instance_id"], pred, samples["y"])
        ]

    def after_evaluation(self, results, split, output_dir, epoch):
        self.save_predictions(results, output_dir, split, epoch)
        mse = sum((r["pred"] - r["target"]) ** 2 for r in results) / len(results)
        return {"mse": mse, "neg_mse": -mse, "n": len(results), "n_unique": len({r["instance_id"] for r in results})}
