"""Model-type yamls that inherit (``_base_``) resolve to exactly the configs they had before."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from lavislite.common.config import load_yaml, model_type_config
from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry
from tests.foundation.snapshot_model_configs import (
    FAMILY_DIR,
    SNAPSHOT,
    canonical,
    resolved_model_configs,
)

REPO = Path(__file__).resolve().parents[2]

STORED = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
CURRENT = resolved_model_configs()


@pytest.mark.parametrize("name,model_type", [(n, t) for n, types in sorted(STORED.items()) for t in sorted(types)])
def test_resolved_config_equals_snapshot(name, model_type):
    assert model_type in CURRENT.get(name, {}), f"{name}/{model_type} is in the snapshot but no longer registered"
    # canonical text: a value's type counts too (0 and 0.0 differ)
    assert canonical(CURRENT[name][model_type]) == canonical(STORED[name][model_type])


def test_snapshot_covers_every_blip_model_type():
    from lavislite.api import model_zoo

    blip = {(e.name, e.model_type) for e in model_zoo.entries(builtin_only=True) if e.config.startswith(FAMILY_DIR)}
    stored = {(n, t) for n, types in STORED.items() for t in types}
    assert blip - stored == set(), "new BLIP model types: add them with `python tests/foundation/snapshot_model_configs.py`"


# -- how `_base_` resolves ------------------------------------------------------------------------
def _files(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_base_chain_list_and_relative_paths(tmp_path):
    _files(tmp_path, {
        "common/root.yaml": "model: {_open_: true, a: 1, b: {x: 1, y: 2}}\n",
        "head/base.yaml": "_base_: ../common/root.yaml\nmodel: {_open_: false, c: 3}\n",
        "head/mixin.yaml": "model: {a: 10}\n",
        "head/variant.yaml": "_base_: [base.yaml, mixin.yaml]\nmodel: {b: {y: 20}}\n",
    })
    cfg = load_yaml(tmp_path / "head" / "variant.yaml")
    assert OmegaConf.to_container(cfg) == {"model": {"a": 10, "b": {"x": 1, "y": 20}, "c": 3}}  # closed marker dropped


def test_unknown_key_in_a_variant_names_the_file_and_key(tmp_path):
    _files(tmp_path, {"base.yaml": "model: {hidden: 1}\n", "variant.yaml": "_base_: base.yaml\nmodel: {hiden: 2}\n"})
    with pytest.raises(ConfigError) as info:
        load_yaml(tmp_path / "variant.yaml")
    msg = str(info.value)
    assert "'model.hiden'" in msg and str(tmp_path / "variant.yaml") in msg and "'model.hidden'" in msg
    assert str(tmp_path / "base.yaml") in msg  # where to add it


def test_a_later_base_in_a_list_may_only_change_keys(tmp_path):
    _files(tmp_path, {"a.yaml": "model: {hidden: 1}\n", "b.yaml": "model: {depth: 2}\n", "v.yaml": "_base_: [a.yaml, b.yaml]\n"})
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.depth' in .*b\.yaml"):
        load_yaml(tmp_path / "v.yaml")


def test_wrong_type_in_a_variant(tmp_path):
    _files(tmp_path, {"base.yaml": "model: {hidden: 1}\n", "variant.yaml": "_base_: base.yaml\nmodel: {hidden: big}\n"})
    with pytest.raises(ConfigError, match=r"'model\.hidden' in .*variant\.yaml must be int"):
        load_yaml(tmp_path / "variant.yaml")


def test_open_sections_accept_new_keys(tmp_path):
    _files(tmp_path, {"base.yaml": "model: {extra: {}, more: {_open_: true, k: 1}}\n",
                      "variant.yaml": "_base_: base.yaml\nmodel: {extra: {n: 1}, more: {m: 2}}\n"})
    cfg = load_yaml(tmp_path / "variant.yaml")
    assert cfg.model.extra.n == 1 and cfg.model.more.m == 2 and cfg.model.more._open_ is True


def test_cycle_names_the_files(tmp_path):
    _files(tmp_path, {"a.yaml": "_base_: b.yaml\n", "b.yaml": "_base_: a.yaml\n"})
    with pytest.raises(ConfigError, match=r"_base_ cycle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_yaml(tmp_path / "a.yaml")


@pytest.mark.parametrize("value,match", [("missing.yaml", r"_base_ file 'missing.yaml' not found"), ("[1]", r"_base_ must be a yaml path")])
def test_bad_base_values(tmp_path, value, match):
    _files(tmp_path, {"v.yaml": f"_base_: {value}\nmodel: {{}}\n"})
    with pytest.raises(ConfigError, match=match) as info:
        load_yaml(tmp_path / "v.yaml")
    assert str(tmp_path / "v.yaml") in str(info.value)


# -- the built-in model yamls ---------------------------------------------------------------------
def test_every_model_section_is_closed_for_overrides():
    """The shared BLIP base leaves `model:` open for the heads; every head closes it again."""
    for name, types in CURRENT.items():
        for model_type, cfg in types.items():
            assert "_open_" not in cfg["model"], f"{name}/{model_type}: its head's base yaml must end with `_open_: false`"
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.promt'.*Did you mean 'model\.prompt'"):
        model_type_config(registry.get_model_class("blip_caption"), "base_coco", {"promt": "a photo of "})


def _head_bases() -> dict[str, Path]:
    """Each built-in model name -> the head base yaml its types inherit first (the same for all its types)."""
    from lavislite.api import model_zoo
    from lavislite.common.config import CONFIG_ROOT

    out: dict[str, set[Path]] = {}
    for e in model_zoo.entries(builtin_only=True):
        if not e.config.startswith(FAMILY_DIR):
            continue
        path = CONFIG_ROOT / e.config
        base = yaml.safe_load(path.read_text())["_base_"]
        out.setdefault(e.name, set()).add((path.parent / (base[0] if isinstance(base, list) else base)).resolve())
    assert all(len(v) == 1 for v in out.values()), f"types of one model inherit different bases: {out}"
    return {name: next(iter(paths)) for name, paths in out.items()}


@pytest.mark.parametrize("name", sorted(STORED))
def test_head_base_lists_every_constructor_option_with_its_default(name):
    """The constructor holds the defaults; its head's base yaml (the schema) names every option with the same value."""
    cls = registry.get_model_class(name)
    schema = OmegaConf.to_container(load_yaml(_head_bases()[name]).model)
    backbone = {"visual_encoder", "vision_width", "med_config", "tokenizer"}  # built from the ViT/text keys
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name == "self" or param.name in backbone:
            continue
        assert param.name in schema, f"{name}: constructor option {param.name!r} is missing from {_head_bases()[name]}"
        assert schema[param.name] == param.default, f"{name}.{param.name}: yaml {schema[param.name]!r} != constructor {param.default!r}"


# -- the documented example -----------------------------------------------------------------------
def test_docs_example_resolves(tmp_path):
    doc = (REPO / "docs" / "registry_and_config.md").read_text()
    blocks = {m.group(1): m.group(0) for m in re.finditer(r"# my_models/(\S+\.yaml)[^\n]*\n.*?(?=```)", doc, flags=re.S)}
    assert set(blocks) == {"_base.yaml", "my_model_large.yaml"}
    for fname, text in blocks.items():
        (tmp_path / fname).write_text(text)
    cfg = OmegaConf.to_container(load_yaml(tmp_path / "my_model_large.yaml"))
    base = OmegaConf.to_container(load_yaml(tmp_path / "_base.yaml"))
    assert cfg["model"] == {**base["model"], "model_type": "large", "hidden": 1024, "vit_overrides": {"depth": 24}}
    assert cfg["preprocess"]["vis_processor"] == {**base["preprocess"]["vis_processor"], "eval": {"name": "blip_image_eval", "image_size": 384}}
    (tmp_path / "my_model_large.yaml").write_text(blocks["my_model_large.yaml"].replace("hidden: 1024", "hiden: 1024"))
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.hiden' in .*my_model_large\.yaml\. Did you mean 'model\.hidden'"):
        load_yaml(tmp_path / "my_model_large.yaml")
