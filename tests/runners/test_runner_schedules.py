"""LR schedules at known steps, AdamW parameter groups, and gradient accumulation."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry
from lavislite.runners.loop import group_size, steps_in_epoch
from lavislite.runners.lr_schedulers import build_lr_scheduler
from lavislite.runners.optim import build_optimizer, param_groups
from lavislite.train import run
from tests.helpers.runners import project, weights


def sched(name: str, total: int = 11, **kw):
    cfg = OmegaConf.create({"lr_sched": name, "init_lr": 1e-3, "min_lr": 1e-5, "warmup_lr": 1e-4, "warmup_steps": 2, "lr_decay_rate": None, **kw})
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return build_lr_scheduler(opt, cfg, total_steps=total), opt


def test_registered_names():
    assert {"linear_warmup_cosine_lr", "linear_warmup_step_lr", "constant_lr"} <= set(registry.list_lr_schedulers())


def test_linear_warmup_cosine_values():
    s, opt = sched("linear_warmup_cosine_lr", total=12)
    assert s.lr_at(0, 0) == pytest.approx(1e-4)
    assert s.lr_at(0, 1) == pytest.approx(1e-4 + (1e-3 - 1e-4) / 2)
    assert s.lr_at(0, 2) == pytest.approx(1e-3)  # warm-up done: cosine starts at init_lr
    # cosine over steps 2..11: half-way (step 6.5) is the mean of init and min
    assert s.lr_at(0, 7) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 5 / 9)))
    assert s.lr_at(5, 11) == pytest.approx(1e-5)  # last step reaches min_lr
    assert s.step(0, 1) == opt.param_groups[0]["lr"]


def test_linear_warmup_step_values():
    s, _ = sched("linear_warmup_step_lr", lr_decay_rate=0.9, total=100)
    assert s.lr_at(0, 1) == pytest.approx(5.5e-4)  # warm-up
    assert s.lr_at(0, 5) == pytest.approx(1e-3)
    assert s.lr_at(1, 50) == pytest.approx(9e-4)
    assert s.lr_at(3, 60) == pytest.approx(1e-3 * 0.9**3)
    assert s.lr_at(100, 99) == pytest.approx(1e-5)  # floored at min_lr


def test_step_lr_needs_decay_rate():
    with pytest.raises(ConfigError, match="lr_decay_rate"):
        sched("linear_warmup_step_lr")


def test_constant_values():
    s, _ = sched("constant_lr")
    assert [s.lr_at(0, i) for i in (0, 1, 2, 9)] == pytest.approx([1e-4, 5.5e-4, 1e-3, 1e-3])


def test_param_groups_no_decay_for_bias_norm_and_frozen():
    from tests.helpers.runner_toys import ToyRegressor

    m = ToyRegressor(dim=4)
    groups = param_groups(m, 0.05)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert decay == {id(m.proj.weight), id(m.head.weight)}
    assert no_decay == {id(m.proj.bias), id(m.head.bias), id(m.norm.weight), id(m.norm.bias)}
    opt = build_optimizer(m, OmegaConf.create({"init_lr": 1e-3, "weight_decay": 0.05}))
    assert isinstance(opt, torch.optim.AdamW) and id(m.frozen) not in decay | no_decay


def test_accumulation_groups():
    assert [group_size(i, 8, 3) for i in range(8)] == [3, 3, 3, 3, 3, 3, 2, 2]
    assert steps_in_epoch(8, 3) == 3 and steps_in_epoch(8, 1) == 8


def test_accumulation_equals_bigger_batch(tmp_path):
    common = dict(max_epoch=2, valid_splits=[], test_splits=[], log_freq=1)
    big = run(str(project(tmp_path, "big", batch_size_train=8, accum_grad_iters=1, **common)), ["model.dropout=0.0"])
    acc = run(str(project(tmp_path, "acc", batch_size_train=4, accum_grad_iters=2, **common)), ["model.dropout=0.0"])
    assert big["steps"] == acc["steps"] == 16
    a, b = weights(big["run_dir"]), weights(acc["run_dir"])
    for k in a:
        if k != "running_mean":  # updated per micro-batch by design
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert big["train"]["loss"] == pytest.approx(acc["train"]["loss"], rel=1e-4)
