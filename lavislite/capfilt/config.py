"""The CapFilt job's settings: one yaml (``capfilt:`` section), defaults below, ``key=value`` overrides.

Every setting is validated up front, so a typo fails with the key and the fix before a model loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lavislite.common.errors import ConfigError

METHODS = ("nucleus", "beam")
FORMATS = ("wds", "json")
DTYPES = ("fp32", "bf16", "fp16")

DEFAULTS: dict[str, Any] = {
    "input": {
        "shards": [],  # webdataset .tar shards (brace patterns allowed)
        "annotations": [],  # or BLIP pre-training json lists ({"image", "caption"})
        "image_root": None,  # where the json's relative image paths start
        "images_per_shard": 1000,  # json input is cut into shards of this many images
    },
    "captioner": {"model": "blip_caption:base_coco", "checkpoint": None, "tokenizer": None, "options": {}},
    "filter": {"model": "blip_image_text_matching:base", "checkpoint": None, "tokenizer": None, "options": {}},
    "generation": {
        "method": "nucleus",  # the paper's choice (Table 2); "beam" for the comparison
        "num_captions": 1,
        "top_p": 0.9,
        "num_beams": 3,
        "max_length": 30,
        "min_length": 5,
        "repetition_penalty": 1.0,  # beam search only; sampling uses BLIP's fixed 1.1
    },
    "filtering": {
        "threshold": 0.5,  # keep a text when the ITM match probability is at least this
        "filter_web": True,  # False: keep every web text (the "captioner only" ablation)
        "filter_synthetic": True,
        "captioner": True,  # False: no synthetic captions (the "filter only" ablation)
    },
    "output": {"dir": None, "formats": ["wds", "json"], "histogram_bins": 20},
    "run": {"batch_size": 32, "device": None, "dtype": "fp32", "seed": 0, "progress": True, "max_text_length": 35},
}


@dataclass(frozen=True)
class ModelSpec:
    """A registered ``name:type`` (or a model folder: ``name`` its path, ``model_type`` None) plus optional
    weights, tokenizer and config overrides."""

    name: str
    model_type: str | None
    checkpoint: str | None = None
    tokenizer: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CapFiltConfig:
    """Everything one CapFilt run needs (built by :func:`load_config`)."""

    shards: tuple[str, ...]
    annotations: tuple[str, ...]
    image_root: str | None
    images_per_shard: int
    captioner: ModelSpec
    filter: ModelSpec
    method: str
    num_captions: int
    top_p: float
    num_beams: int
    max_length: int
    min_length: int
    repetition_penalty: float
    threshold: float
    filter_web: bool
    filter_synthetic: bool
    use_captioner: bool
    output_dir: Path
    formats: tuple[str, ...]
    histogram_bins: int
    batch_size: int
    device: str | None
    dtype: str
    seed: int
    progress: bool
    max_text_length: int


def load_config(source: str | Path | dict | None = None, options: Sequence[str] = ()) -> CapFiltConfig:
    """Defaults <- the yaml file (or dict; its ``capfilt:`` section if it has one) <- ``key=value`` options."""
    from omegaconf import OmegaConf

    base = OmegaConf.create(DEFAULTS)
    where = "the config"
    if source is not None:
        if isinstance(source, dict):
            user = OmegaConf.create(source)
        else:
            where = str(source)
            path = Path(source)
            if not path.is_file():
                raise ConfigError(f"capfilt config {path} does not exist; pass a yaml file (see projects/capfilt/)")
            user = OmegaConf.load(path)
        if "capfilt" in user:
            user = user.capfilt
        _check_keys(OmegaConf.to_container(user), DEFAULTS, where, "")
        base = OmegaConf.merge(base, user)
    for opt in options:
        key, sep, value = str(opt).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"capfilt option {opt!r} is not key=value (example: filtering.threshold=0.6)")
        key = key.strip().removeprefix("capfilt.")
        if OmegaConf.select(base, key, default="__missing__") == "__missing__":
            raise ConfigError(f"capfilt option {key!r} is not a setting; known sections: {', '.join(DEFAULTS)}")
        OmegaConf.update(base, key, _parse_value(key, value), force_add=False)
    return _validate(OmegaConf.to_container(base, resolve=True), where)


def _parse_value(key: str, raw: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"capfilt option {key}: cannot parse the value {raw!r} ({exc})") from exc


def _check_keys(user: Any, defaults: dict[str, Any], where: str, prefix: str) -> None:
    if not isinstance(user, dict):
        raise ConfigError(f"{where}: {prefix or 'capfilt'} must be a mapping, got {type(user).__name__}")
    for key, value in user.items():
        if key not in defaults:
            raise ConfigError(f"{where}: unknown key {prefix}{key!r}; known: {', '.join(defaults)}")
        if isinstance(defaults[key], dict) and key != "options":
            _check_keys(value, defaults[key], where, f"{prefix}{key}.")


def _model(d: dict[str, Any], section: str, where: str) -> ModelSpec:
    """``NAME:TYPE`` (a registered type) or the path of a model folder / run directory (``model_type`` None)."""
    value = str(d.get("model") or "")
    name, sep, mtype = value.partition(":")
    if Path(value).expanduser().is_dir():
        return ModelSpec(str(Path(value).expanduser()), None, _opt_str(d.get("checkpoint")), _opt_str(d.get("tokenizer")),
                         dict(d.get("options") or {}))
    if not sep or not name or not mtype:
        raise ConfigError(f"{where}: {section}.model={d.get('model')!r}; write NAME:TYPE (e.g. blip_caption:base_coco) "
                          "or the path of a model folder")
    return ModelSpec(name, mtype, _opt_str(d.get("checkpoint")), _opt_str(d.get("tokenizer")), dict(d.get("options") or {}))


def _opt_str(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


def _as_tuple(v: Any) -> tuple[str, ...]:
    if v in (None, ""):
        return ()
    return (str(v),) if isinstance(v, (str, Path)) else tuple(str(x) for x in v)


def _validate(c: dict[str, Any], where: str) -> CapFiltConfig:
    inp, gen, flt, out, run = c["input"], c["generation"], c["filtering"], c["output"], c["run"]
    shards, anns = _as_tuple(inp["shards"]), _as_tuple(inp["annotations"])
    if bool(shards) == bool(anns):
        raise ConfigError(f"{where}: give exactly one of input.shards (webdataset .tar) or input.annotations (BLIP json)")
    if out["dir"] in (None, ""):
        raise ConfigError(f"{where}: output.dir is not set; name the folder for the bootstrapped shards")
    if gen["method"] not in METHODS:
        raise ConfigError(f"{where}: generation.method={gen['method']!r}; use one of {', '.join(METHODS)}")
    formats = _as_tuple(out["formats"])
    bad = [f for f in formats if f not in FORMATS] or ([] if formats else ["(none)"])
    if bad:
        raise ConfigError(f"{where}: output.formats has {bad}; use a list from {list(FORMATS)}")
    if run["dtype"] not in DTYPES:
        raise ConfigError(f"{where}: run.dtype={run['dtype']!r}; use one of {', '.join(DTYPES)}")
    for key, value, low in (("generation.num_captions", gen["num_captions"], 1), ("run.batch_size", run["batch_size"], 1),
                            ("input.images_per_shard", inp["images_per_shard"], 1), ("output.histogram_bins", out["histogram_bins"], 1),
                            ("generation.max_length", gen["max_length"], 2), ("generation.num_beams", gen["num_beams"], 1)):
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{where}: {key}={value!r}; use an integer >= {low}")
    if gen["method"] == "beam" and gen["num_captions"] > gen["num_beams"]:
        raise ConfigError(f"{where}: generation.num_captions={gen['num_captions']} > num_beams={gen['num_beams']}; "
                          "beam search returns at most num_beams captions")
    if not 0.0 <= float(flt["threshold"]) <= 1.0:
        raise ConfigError(f"{where}: filtering.threshold={flt['threshold']!r}; use a probability in [0, 1]")
    if not 0.0 < float(gen["top_p"]) <= 1.0:
        raise ConfigError(f"{where}: generation.top_p={gen['top_p']!r}; use a value in (0, 1]")
    return CapFiltConfig(
        shards=shards, annotations=anns, image_root=_opt_str(inp["image_root"]), images_per_shard=int(inp["images_per_shard"]),
        captioner=_model(c["captioner"], "captioner", where), filter=_model(c["filter"], "filter", where),
        method=gen["method"], num_captions=int(gen["num_captions"]), top_p=float(gen["top_p"]), num_beams=int(gen["num_beams"]),
        max_length=int(gen["max_length"]), min_length=int(gen["min_length"]), repetition_penalty=float(gen["repetition_penalty"]),
        threshold=float(flt["threshold"]), filter_web=bool(flt["filter_web"]), filter_synthetic=bool(flt["filter_synthetic"]),
        use_captioner=bool(flt["captioner"]), output_dir=Path(str(out["dir"])), formats=formats,
        histogram_bins=int(out["histogram_bins"]), batch_size=int(run["batch_size"]), device=_opt_str(run["device"]),
        dtype=str(run["dtype"]), seed=int(run["seed"]), progress=bool(run["progress"]), max_text_length=int(run["max_text_length"]),
    )
