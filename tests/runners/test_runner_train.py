"""Single-process training with the toy regression plugins: outputs, loss, bf16, evaluate-only, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from lavislite.common.errors import ConfigError
from lavislite.train import run
from tests.helpers.runners import project, weights


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_training_lowers_loss_and_writes_outputs(tmp_path):
    summary = run(str(project(tmp_path)))
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == tmp_path / "out" / "toy"
    for name in ("config.yaml", "log.txt", "metrics.jsonl", "val_metrics.json", "test_metrics.json",
                 "checkpoint_latest.pth", "checkpoint_best.pth", "summary.json"):
        assert (run_dir / name).is_file(), name
    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(2, 25, 2))  # log_freq 2, 3 epochs x 8 steps
    epochs = [r["loss"] for r in records if r["kind"] == "train_epoch"]
    assert epochs[-1] < 0.5 * epochs[0]
    vals = [r["mse"] for r in records if r["kind"] == "eval" and r["split"] == "val"]
    assert len(vals) == 3 and vals[-1] < vals[0]
    # the best checkpoint is the best validation epoch; the test split was scored with it
    best = torch.load(run_dir / "checkpoint_best.pth", weights_only=True)
    assert best["epoch"] == summary["best_epoch"] and best["metric"] == summary["best_metric"] == max(-v for v in vals)
    test = json.loads((run_dir / "test_metrics.json").read_text())
    assert test["epoch"] == summary["best_epoch"] and test["num_samples"] == 21
    assert summary["metrics"]["test"]["n_unique"] == 21
    preds = json.loads((run_dir / "result" / f"test_epoch{summary['best_epoch']}.json").read_text())
    assert sorted(p["instance_id"] for p in preds) == sorted(f"test-{i}" for i in range(21))
    assert "neg_mse" in (run_dir / "log.txt").read_text()
    assert "max_epoch: 3" in (run_dir / "config.yaml").read_text()
    # the latest checkpoint holds the full state: frozen parameter and buffer included
    sd = weights(run_dir)
    assert {"frozen", "running_mean", "proj.weight"} <= set(sd) and sd["running_mean"].abs().sum() > 0


def test_run_ids_differ_within_one_second(tmp_path):
    a = run(str(project(tmp_path, max_epoch=1, test_splits=[])))
    b = run(str(project(tmp_path, max_epoch=1, test_splits=[])))
    assert a["run_dir"] != b["run_dir"]


def test_bf16_autocast_on_cpu(tmp_path):
    summary = run(str(project(tmp_path, amp="bf16", max_epoch=2)))
    assert summary["steps"] == 16
    assert summary["metrics"]["val"]["mse"] < 10 and all(torch.isfinite(v).all() for v in weights(summary["run_dir"]).values())


def test_grad_clip_and_step_lr(tmp_path):
    summary = run(str(project(tmp_path, grad_clip=0.5, lr_sched="linear_warmup_step_lr", lr_decay_rate=0.5, max_epoch=2)))
    lrs = {r["epoch"]: r["lr"] for r in read_jsonl(Path(summary["run_dir"]) / "metrics.jsonl") if r["kind"] == "train"}
    assert lrs[0] == pytest.approx(0.02) and lrs[1] == pytest.approx(0.01)


def test_no_validation_tests_the_final_weights(tmp_path):
    summary = run(str(project(tmp_path, valid_splits=[], max_epoch=2)))
    assert summary["best_metric"] is None and not (Path(summary["run_dir"]) / "checkpoint_best.pth").exists()
    assert json.loads((Path(summary["run_dir"]) / "test_metrics.json").read_text())["epoch"] == 1


def test_evaluate_only_with_checkpoint(tmp_path):
    trained = run(str(project(tmp_path, max_epoch=2)))
    best = Path(trained["run_dir"]) / "checkpoint_best.pth"
    ev = run(str(project(tmp_path)), evaluate=True, resume=str(best))
    assert ev["steps"] == 0 and ev["run_dir"] != trained["run_dir"]
    assert ev["metrics"]["test"] == trained["metrics"]["test"]
    assert not (Path(ev["run_dir"]) / "checkpoint_latest.pth").exists()


def test_runner_iter_crosses_passes(tmp_path):
    summary = run(str(project(tmp_path, runner="runner_iter", max_iters=20, iters_per_inner_epoch=7, accum_grad_iters=2)))
    records = read_jsonl(Path(summary["run_dir"]) / "metrics.jsonl")
    assert [r["epoch"] for r in records if r["kind"] == "train_epoch"] == [0, 1, 2]
    # inner epochs of 7, 7, 6 iterations; accumulation groups (2,2,2,1),(2,2,2,1),(2,2,2)
    assert summary["steps"] == 4 + 4 + 3


def test_unwritable_output_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"run.output_dir: cannot write to .*file"):
        run(str(project(tmp_path, output_dir=str(blocker / "sub"), toy_fail_step=1, toy_fail_rank=0)))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_output_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="cannot write"):
            run(str(project(tmp_path, output_dir=str(ro))))
    finally:
        ro.chmod(0o700)


def test_not_enough_free_space(tmp_path):
    with pytest.raises(ConfigError, match="min_free_space_mb"):
        run(str(project(tmp_path, min_free_space_mb=1e12)))


def test_bad_select_metric_names_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"'acc'.*neg_mse"):
        run(str(project(tmp_path, select_metric="acc", max_epoch=1)))


def test_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"'dev'.*\['test', 'train', 'val'\]"):
        run(str(project(tmp_path, valid_splits=["dev"], max_epoch=1)))


def test_cli_train_and_evaluate(tmp_path, capsys):
    from lavislite.cli import main

    cfg = project(tmp_path, max_epoch=1)
    assert main(["train", "--cfg-path", str(cfg), "--options", "run.init_lr=0.01"]) == 0
    out = json.loads(capsys.readouterr().out)
    run_dir = Path(out["run_dir"])
    assert (run_dir / "checkpoint_latest.pth").is_file() and "init_lr: 0.01" in (run_dir / "config.yaml").read_text()
    assert main(["evaluate", "--cfg-path", str(cfg), "--resume", str(run_dir / "checkpoint_best.pth")]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["metrics"]["test"] == out["metrics"]["test"]
    assert main(["train", "--cfg-path", str(cfg), "--options", "run.max_epohc=2"]) == 2
    assert "run.max_epoch" in capsys.readouterr().err


def test_skip_bad_samples_reaches_the_builder(tmp_path):
    from lavislite.common.config import build_run_config
    from lavislite.tasks import setup_task

    cfg = build_run_config(project(tmp_path), ["run.skip_bad_samples=true"])
    task = setup_task(cfg)
    import tests.helpers.runner_toys as toys

    seen = []
    orig = toys.ToyBuilder.build_datasets
    toys.ToyBuilder.build_datasets = lambda self: (seen.append(self.skip_bad_samples), orig(self))[1]
    try:
        datasets = task.build_datasets(cfg)
    finally:
        toys.ToyBuilder.build_datasets = orig
    assert seen == [True] and set(datasets["toy_regression"]) == {"train", "val", "test"}


def test_runner_reports_train_progress_to_tasks_that_ask(tmp_path, monkeypatch):
    import tests.helpers.runner_toys as toys

    seen = []
    monkeypatch.setattr(toys.ToyTask, "set_train_progress", lambda self, e, i, n: seen.append((e, i, n)), raising=False)
    run(str(project(tmp_path, max_epoch=2, valid_splits=[], test_splits=[])))
    assert seen == [(e, i, 8) for e in range(2) for i in range(8)]


@pytest.mark.parametrize("value", [None, False, "none", "None", "off", "fp32", "null"])
def test_amp_full_precision_spellings(value):
    from lavislite.runners.loop import amp_dtype

    assert amp_dtype(value, torch.device("cpu")) is None


def test_amp_unknown_value_names_the_choices():
    from lavislite.runners.loop import amp_dtype

    with pytest.raises(ConfigError, match=r"run.amp='int8'.*null \(fp32\), bf16 or fp16"):
        amp_dtype("int8", torch.device("cpu"))
