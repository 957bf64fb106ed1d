"""The worked example of docs/tasks.md runs: registered from a user module, its run keys validated."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from lavislite.common.config import build_run_config
from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry
from tests.helpers.tasks import ToyRetrieval

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def example_module(tmp_path, monkeypatch):
    code = next(b for b in re.findall(r"```python\n(.*?)```", (REPO / "docs" / "tasks.md").read_text(), flags=re.S) if "my_tasks/zero_shot.py" in b)
    pkg = tmp_path / "my_tasks_doc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "zero_shot.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.tasks.unregister("zero_shot_classification")
    yield "my_tasks_doc.zero_shot"
    registry.tasks.unregister("zero_shot_classification")
    for name in [m for m in sys.modules if m.startswith("my_tasks_doc")]:
        del sys.modules[name]


def _project(tmp_path: Path, module: str, extra: str = "") -> Path:
    path = tmp_path / "zs.yaml"
    path.write_text(
        "model: {arch: blip_retrieval, model_type: tiny}\n"
        "datasets:\n  toy_regression: {}\n"
        "run:\n  task: zero_shot_classification\n"
        f"  imports: [tests.helpers.runner_toys, {module}]\n"
        "  class_names: [red, green, blue]\n  evaluate: true\n  test_splits: [test]\n" + extra
    )
    return path


def test_example_registers_and_validates(tmp_path, example_module):
    cfg = build_run_config(_project(tmp_path, example_module))
    assert list(cfg.run.class_names) == ["red", "green", "blue"] and cfg.run.prompt == "a picture of a {}"
    with pytest.raises(ConfigError, match="class_nams"):
        build_run_config(_project(tmp_path, example_module, "  class_nams: [x]\n"))


def test_example_evaluates(tmp_path, example_module):
    cfg = build_run_config(_project(tmp_path, example_module))
    task = registry.get_task_class("zero_shot_classification")(cfg)
    model = ToyRetrieval().eval()
    images = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        results = task.valid_step(model, {"image": images, "label": torch.tensor([0, 1, 2, 0, 1, 2]), "instance_id": list("abcdef")})
    assert [r["instance_id"] for r in results] == list("abcdef")
    metrics = task.after_evaluation(results, "test", tmp_path, 0)
    expected = 100.0 * sum(r["prediction"] == r["label"] for r in results) / 6
    assert metrics == {"acc": pytest.approx(expected)}
    assert (tmp_path / "result" / "test_epoch0.json").is_file()
