"""Fuzzing config merging: parse_options / merge_validated fail only with ConfigError; valid overrides round-trip."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from lavislite.common import config as config_mod
from lavislite.common.config import merge_validated, parse_options
from lavislite.common.errors import ConfigError

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BASE = {
    "run": {"lr": 0.1, "max_epoch": 3, "name": "x", "amp": False, "splits": ["val"], "sched": {"warmup": 5}, "extra": {}},
    "model": {"arch": "blip", "image_size": 384, "checkpoint": None},
}
SCALAR_KEYS = {  # dotted key -> strategy of values of the right type
    "run.lr": st.floats(allow_nan=False, allow_infinity=False, width=32) | st.integers(-10**6, 10**6),
    "run.max_epoch": st.integers(-10**9, 10**9),
    "run.name": st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20).filter(lambda s: "$" not in s),
    "run.amp": st.booleans(),
    "run.sched.warmup": st.integers(0, 10**6),
    "model.image_size": st.integers(1, 4096),
}


def base() -> DictConfig:
    return OmegaConf.create(BASE)


# a word of the option grammar: keys, dots, '=', yaml syntax and interpolation fragments
_PIECES = st.sampled_from(["run", "model", ".", "=", "lr", "${", "}", "[", "]", "{", "}", ":", ",", "'", '"', "!!", "&a", "*a",
                          "~", "null", "1", "-1", "1.5e3", ".nan", "2020-01-01", "true", "image_size", " ", "\n", "#", "%"])
option_text = st.lists(_PIECES | st.text(max_size=6), max_size=10).map("".join)


@FUZZ
@given(st.lists(option_text, max_size=4))
def test_parse_options_only_raises_config_error(options):
    try:
        out = parse_options(options)
    except ConfigError:
        return
    assert isinstance(out, DictConfig)


@FUZZ
@given(st.lists(option_text, max_size=4))
def test_options_merged_on_a_schema_only_raise_config_error(options):
    try:
        merge_validated(base(), parse_options(options), "--options")
    except ConfigError:
        pass


_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=4)
_key = st.sampled_from(["run", "model", "lr", "max_epoch", "name", "splits", "sched", "warmup", "extra", "arch", "image_size"]) | st.text(max_size=5)
nested = st.recursive(_leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_key, kids, max_size=3), max_leaves=12)


@FUZZ
@given(st.dictionaries(_key, nested, max_size=4))
def test_merge_validated_only_raises_config_error(override):
    try:
        merged = merge_validated(base(), override, "fuzz.yaml")
    except ConfigError:
        return
    assert isinstance(merged, DictConfig)


def _render(value) -> str:
    """``value`` as one yaml scalar, the way a user would type it after ``key=``."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True)
    return text.removesuffix("\n...\n").removesuffix("\n")


@FUZZ
@given(st.data())
def test_valid_overrides_round_trip(data):
    keys = data.draw(st.lists(st.sampled_from(sorted(SCALAR_KEYS)), unique=True, min_size=1, max_size=4))
    values = {k: data.draw(SCALAR_KEYS[k]) for k in keys}
    merged = merge_validated(base(), parse_options([f"{k}={_render(v)}" for k, v in values.items()]), "--options")
    for k, v in values.items():
        got = OmegaConf.select(merged, k)
        if isinstance(v, float):
            assert math.isclose(got, v, rel_tol=1e-6, abs_tol=1e-30), (k, v, got)
        else:
            assert got == v and type(got) is type(v), (k, v, got)
    untouched = {k for k in SCALAR_KEYS if k not in values}
    for k in untouched:  # everything else keeps its default
        assert OmegaConf.select(merged, k) == OmegaConf.select(base(), k)


def test_unknown_and_mistyped_keys_are_config_errors():
    with pytest.raises(ConfigError, match=r"unknown config key 'run\.max_epochs'.*Did you mean 'run\.max_epoch'"):
        merge_validated(base(), parse_options(["run.max_epochs=3"]), "--options")
    with pytest.raises(ConfigError, match=r"'run\.max_epoch' in --options must be int"):
        merge_validated(base(), parse_options(["run.max_epoch=three"]), "--options")


@pytest.mark.parametrize("option", ["run.name=${oops", "run.name=2020-01-01", "run..lr=1", ".run=1"])
def test_omegaconf_failures_become_config_errors(option):
    with pytest.raises(ConfigError, match="--options"):
        merge_validated(base(), parse_options([option]), "--options")


def test_without_the_wrapping_omegaconf_errors_escape(monkeypatch):
    """Mutation check: with parse_options' guard removed, the fuzzed inputs above escape as non-ConfigErrors."""

    def unguarded(options):
        cfg = OmegaConf.create()
        for opt in options:
            key, raw = opt.split("=", 1)
            OmegaConf.update(cfg, key, yaml.safe_load(raw), merge=True, force_add=True)
        return cfg

    monkeypatch.setattr(config_mod, "parse_options", unguarded)
    with pytest.raises(Exception) as err:
        config_mod.parse_options(["run.name=${oops"])
    assert not isinstance(err.value, ConfigError)
