from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lavislite.common.config import (
    build_run_config,
    get_cache_dir,
    merge_validated,
    parse_options,
    to_kwargs,
)
from lavislite.common.errors import ConfigError

PLUGIN = "tests.foundation.plugin_pkg.my_plugins"


def write(tmp_path: Path, text: str, name: str = "project.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def project(tmp_path, extra_run: str = "", model: str = "", datasets: str = "") -> Path:
    return write(
        tmp_path,
        f"""
model:
  arch: test_tiny_linear
  model_type: default
{model}
datasets:
  test_numbers:
    size: 16
{datasets}
run:
  task: test_echo_task
  runner: test_noop_runner
  imports: [{PLUGIN}]
  max_epoch: 3
{extra_run}
""",
    )


def test_merge_order(tmp_path):
    cfg = build_run_config(project(tmp_path, model="  scale: 3.0"), ["run.max_epoch=5", "model.hidden=8"])
    assert cfg.run.seed == 42  # package default
    assert cfg.model.use_bias is True  # model type default
    assert cfg.model.scale == 3.0  # project beats model default
    assert cfg.model.hidden == 8  # --options beat model default
    assert cfg.datasets.test_numbers.size == 16  # project beats dataset default
    assert cfg.datasets.test_numbers.build_info.storage is None  # dataset default kept
    assert cfg.run.max_epoch == 5  # --options beat project
    assert cfg.run.echo_times == 1 and cfg.run.echo_word == "hi"  # task's own defaults
    assert cfg.run.noop_level == 0  # runner's own defaults
    assert cfg.run.run_name == "project"


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    path = project(tmp_path, extra_run="  max_epohc: 2")
    with pytest.raises(ConfigError) as info:
        build_run_config(path)
    msg = str(info.value)
    assert "run.max_epohc" in msg and str(path) in msg and "run.max_epoch" in msg


def test_unknown_model_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.hiden.*Did you mean 'model\.hidden'"):
        build_run_config(project(tmp_path, model="  hiden: 3"))


def test_unknown_key_from_options(tmp_path):
    with pytest.raises(ConfigError, match=r"run\.sed.*--options.*run\.seed"):
        build_run_config(project(tmp_path), ["run.sed=1"])


def test_wrong_type_names_key_and_file(tmp_path):
    path = project(tmp_path, extra_run="  seed: forty-two")
    with pytest.raises(ConfigError) as info:
        build_run_config(path)
    msg = str(info.value)
    assert "run.seed" in msg and str(path) in msg and "int" in msg


def test_wrong_type_in_options(tmp_path):
    with pytest.raises(ConfigError, match="model.use_bias.*--options.*bool"):
        build_run_config(project(tmp_path), ["model.use_bias=3"])


def test_int_accepted_for_float(tmp_path):
    cfg = build_run_config(project(tmp_path), ["run.init_lr=1"])
    assert cfg.run.init_lr == 1


def test_exponent_without_dot_is_a_float(tmp_path):
    """YAML 1.1 reads 2e-3 as a string; for a float key it is the number (in yaml files and --options)."""
    cfg = build_run_config(project(tmp_path, extra_run="  min_lr: 1e-6\n"), ["run.init_lr=2e-3"])
    assert cfg.run.init_lr == 0.002 and isinstance(cfg.run.init_lr, float)
    assert cfg.run.min_lr == 1e-6
    with pytest.raises(ConfigError, match="run.init_lr.*float.*'2e-3x'"):
        build_run_config(project(tmp_path), ["run.init_lr=2e-3x"])


def test_a_saved_run_config_is_a_valid_project_yaml(tmp_path):
    """The merged config written next to a run (with its preprocess: section) can be run again as it is."""
    cfg = build_run_config(project(tmp_path), ["run.init_lr=0.5"])
    saved = tmp_path / "saved" / "config.yaml"
    saved.parent.mkdir()
    OmegaConf.save(cfg, saved)
    again = build_run_config(saved)
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)


def test_unknown_top_level_section(tmp_path):
    path = write(tmp_path, "modle: {}\n")
    with pytest.raises(ConfigError, match="modle"):
        build_run_config(path)


def test_user_task_from_project_yaml(tmp_path):
    cfg = build_run_config(project(tmp_path))
    from lavislite.common.registry import registry

    assert registry.get_task_class(cfg.run.task).__name__ == "EchoTask"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_run_config(tmp_path / "nope.yaml")
    bad = write(tmp_path, "run: [unclosed\n", "bad.yaml")
    with pytest.raises(ConfigError, match="bad.yaml"):
        build_run_config(bad)


def test_parse_options():
    cfg = parse_options(["a.b=1", "a.c=hello", "d=[1, 2]", "e=1.5e-5", "f=null"])
    assert cfg.a.b == 1 and cfg.a.c == "hello" and list(cfg.d) == [1, 2] and cfg.f is None
    assert abs(float(cfg.e) - 1.5e-5) < 1e-12
    with pytest.raises(ConfigError, match="key=value"):
        parse_options(["novalue"])


def test_open_nodes_accept_anything():
    base = OmegaConf.create({"a": {}, "b": None, "c": {"x": 1}})
    merged = merge_validated(base, {"a": {"anything": 1}, "b": {"deep": [1]}}, "test")
    assert merged.a.anything == 1 and merged.b.deep == [1]
    with pytest.raises(ConfigError):
        merge_validated(base, {"c": {"y": 1}}, "test")


def test_cache_dir_env_and_config(monkeypatch, tmp_path):
    monkeypatch.delenv("LAVISLITE_CACHE", raising=False)
    assert get_cache_dir() == Path("~/.cache/lavislite").expanduser()
    assert get_cache_dir(OmegaConf.create({"run": {"cache_dir": str(tmp_path)}})) == tmp_path
    monkeypatch.setenv("LAVISLITE_CACHE", str(tmp_path / "env"))
    assert get_cache_dir(OmegaConf.create({"run": {"cache_dir": "/elsewhere"}})) == tmp_path / "env"


def test_to_kwargs_rejects_unknown():
    class P:
        def __init__(self, image_size: int = 384, mean=None):
            pass

    assert to_kwargs({"name": "x", "image_size": 224}, P) == {"image_size": 224}
    with pytest.raises(ConfigError, match="imag_size.*image_size"):
        to_kwargs({"imag_size": 224}, P)


def test_default_yaml_has_no_absolute_paths():
    from lavislite.common.config import DEFAULT_CONFIG

    text = DEFAULT_CONFIG.read_text()
    assert "/export" not in text and "/home" not in text
