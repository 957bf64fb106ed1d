import pytest
import torch

import lavislite
from lavislite.common.errors import ConfigError, RegistryError

PLUGIN = "tests.foundation.plugin_pkg.my_plugins"


@pytest.fixture(autouse=True)
def plugins():
    lavislite.registry.import_modules([PLUGIN])


def test_load_model_and_preprocess_with_test_model():
    model, vis, txt = lavislite.load_model_and_preprocess("test_tiny_linear", "default", hidden=3)
    assert model.linear.in_features == 3
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert set(vis) == {"train", "eval"} and set(txt) == {"train", "eval"}
    assert vis["eval"](torch.ones(2)).tolist() == [2.0, 2.0]
    assert txt["eval"]("a dog") == "A DOG"
    assert txt["train"]("same") == "same"  # no train processor configured: identity


def test_preprocess_override_from_python():
    _, vis, _ = lavislite.load_model_and_preprocess(
        "test_tiny_linear", "default", **{"preprocess.vis_processor.eval.factor": 5.0}
    )
    assert vis["eval"](torch.ones(1)).item() == 5.0


def test_overrides_are_validated():
    with pytest.raises(ConfigError, match="hiden"):
        lavislite.load_model("test_tiny_linear", "default", hiden=3)
    with pytest.raises(ConfigError, match="scale"):
        lavislite.load_model("test_tiny_linear", "default", scale="big")


def test_unknown_name_and_type():
    with pytest.raises(RegistryError, match="test_tiny_linear"):
        lavislite.load_model("test_tiny_linea", "default")
    with pytest.raises(ConfigError, match="Valid types: default"):
        lavislite.load_model("test_tiny_linear", "large")


def test_checkpoint_argument_loads_weights(tmp_path):
    src = lavislite.load_model("test_tiny_linear", "default", is_eval=False)
    with torch.no_grad():
        src.linear.weight.fill_(0.25)
    path = tmp_path / "w.pth"
    torch.save({"model": src.state_dict()}, path)
    model = lavislite.load_model("test_tiny_linear", "default", checkpoint=str(path))
    assert torch.all(model.linear.weight == 0.25)


def test_dtype_and_train_mode():
    model = lavislite.load_model("test_tiny_linear", "default", is_eval=False, dtype="bf16")
    assert model.training and model.linear.weight.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        lavislite.load_model("test_tiny_linear", "default", dtype="int3")


def test_model_zoo_lists_test_model():
    text = str(lavislite.model_zoo)
    assert "test_tiny_linear" in text
    assert any(e.name == "test_tiny_linear" and e.model_type == "default" for e in lavislite.model_zoo)
