"""Configuration: yaml loading, validated merging and the cache directory.

A run's config is merged in this order, each layer checked against the ones below it:

    package defaults (configs/default.yaml)
      < model type defaults (the model class's variant yaml)
      < dataset defaults (each builder's yaml)
      < the project yaml
      < command-line ``--options key=value`` (or keyword overrides from Python)

The lower layers define the schema: a key that no lower layer defines is an error naming the key, the
file it came from and the nearest valid key; so is a value whose type differs from the default's. An
empty mapping (``{}``) or a ``null`` default marks a node as open (any keys or any value).

A yaml file may inherit from others with a top-level ``_base_:`` (see :func:`load_yaml`): the variant
yamls of a model hold only what differs from their head's base yaml.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from lavislite.common.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
CONFIG_ROOT = PACKAGE_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_ROOT / "default.yaml"
CACHE_ENV = "LAVISLITE_CACHE"

_OPEN = "_open_"  # a mapping listing this key (true) accepts any sub-keys; false closes it again
_BASE = "_base_"  # a yaml's top-level list of the yamls it inherits from


# -- files -----------------------------------------------------------------------------------
def load_yaml(path: str | Path) -> DictConfig:
    """Read a yaml file into a DictConfig, its ``_base_`` files merged underneath; errors name the file.

    A top-level ``_base_:`` (one path or a list, relative to the file) names yamls this file inherits
    from. The bases are loaded the same way (recursively) and merged in order; then the file's own keys
    are merged on top. Each layer is validated against the ones before it: a key the bases do not
    define is an error naming the file and the key, unless the bases mark that mapping open (an empty
    ``{}``, ``null`` or ``_open_: true``). A file that adds keys to an open mapping may close it again
    for what comes after (variants, overrides) with ``_open_: false``; that marker is then dropped.
    A cycle of bases is an error naming the files in it.
    """
    return _load_with_bases(Path(path), ())


def _read_yaml(path: Path) -> DictConfig:
    """One yaml file as a DictConfig, without resolving ``_base_``."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}. Check the path (relative paths are resolved from {Path.cwd()}).")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid yaml: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc}); save the file as UTF-8") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return OmegaConf.create(data)
    except Exception as exc:  # omegaconf rejects some key types; say which file
        raise ConfigError(f"{path}: {exc}") from exc


def _load_with_bases(path: Path, chain: tuple[Path, ...]) -> DictConfig:
    """``path`` merged over its ``_base_`` files; ``chain`` holds the files that inherit from it."""
    key = path.resolve()
    if key in chain:
        cycle = " -> ".join(str(p) for p in (*chain[chain.index(key):], key))
        raise ConfigError(f"{_BASE} cycle: {cycle}; remove one of these {_BASE} entries")
    cfg = _read_yaml(path)
    if _BASE not in cfg:
        return cfg
    bases = _base_paths(path, cfg[_BASE])
    del cfg[_BASE]
    merged: DictConfig | None = None
    for i, base in enumerate(bases):
        node = _load_with_bases(base, (*chain, key))
        merged = node if merged is None else _merge_layer(merged, node, base, bases[:i])
    return cfg if merged is None else _drop_closed_markers(_merge_layer(merged, cfg, path, bases))


def _drop_closed_markers(node: DictConfig) -> DictConfig:
    """Remove ``_open_: false`` (a file closing a mapping its base left open): closed is the default."""
    if node.get(_OPEN) is False:
        del node[_OPEN]
    for key in list(node):
        if not _is_interpolation(node, key) and isinstance(node.get(key), DictConfig):
            _drop_closed_markers(node[key])
    return node


def _merge_layer(below: DictConfig, layer: DictConfig, path: Path, bases: list[Path]) -> DictConfig:
    """``layer`` (the file ``path``) validated against and merged over ``below`` (from ``bases``)."""
    try:
        return merge_validated(below, layer, str(path))
    except ConfigError as exc:
        if not str(exc).startswith("unknown config key"):
            raise
        names = ", ".join(str(b) for b in bases)
        raise ConfigError(
            f"{exc}. {path.name} may only set keys that {names} defines ({_BASE}): add the key there, "
            "or mark that mapping `_open_: true` there"
        ) from exc


def _base_paths(path: Path, value: Any) -> list[Path]:
    """The files a ``_base_`` value names: a path or a list of paths, relative to ``path``'s folder."""
    items = list(value) if isinstance(value, ListConfig) else [value]
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{path}: {_BASE} must be a yaml path or a list of yaml paths (relative to this file), got {item!r}")
        base = Path(item).expanduser()
        base = base if base.is_absolute() else path.parent / base
        if not base.is_file():
            raise ConfigError(f"{path}: {_BASE} file {item!r} not found (looked for {base}); paths are relative to {path.parent}")
        out.append(base)
    return out


def resolve_config_path(path: str | Path) -> Path:
    """A path as given, or relative to ``lavislite/configs`` for the package's own files."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return CONFIG_ROOT / p


def save_config(cfg: DictConfig, path: str | Path) -> Path:
    """Write the merged config (interpolations resolved where possible) as yaml."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=False), encoding="utf-8")
    return path


# -- validated merge --------------------------------------------------------------------------
def _is_open(node: Any) -> bool:
    return node is None or (isinstance(node, DictConfig) and (len(node) == 0 or (_OPEN in node and node.get(_OPEN) is not False)))


def _type_ok(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (ListConfig, list, tuple)):
        return isinstance(value, (ListConfig, list, tuple))
    if isinstance(default, (DictConfig, dict)):
        return isinstance(value, (DictConfig, dict))
    return True


def _type_name(v: Any) -> str:
    if isinstance(v, (ListConfig, list, tuple)):
        return "list"
    if isinstance(v, (DictConfig, dict)):
        return "mapping"
    return type(v).__name__


_PROCESSOR_KEYS = ("vis_processor", "text_processor")


def _is_processor_spec(prefix: str) -> bool:
    """``...vis_processor.<split>.`` / ``...text_processor.<split>.``: a processor's options, whose schema
    is the processor class's signature (checked by ``to_kwargs`` when it is built), not the yaml's."""
    parts = prefix.rstrip(".").split(".")
    return len(parts) >= 2 and parts[-2] in _PROCESSOR_KEYS


def _drop_renamed_processors(base: DictConfig, override: DictConfig) -> DictConfig:
    """A processor entry that names another processor replaces the default entry instead of merging
    into it: the old entry's options (e.g. ``min_scale``) belong to the old processor."""
    out = base
    for key in override.keys():
        new, old = override.get(key), base.get(key) if key in base else None
        if not (isinstance(new, DictConfig) and isinstance(old, DictConfig)):
            continue
        if key in _PROCESSOR_KEYS:
            for split in new.keys():
                n, o = new.get(split), old.get(split) if split in old else None
                if isinstance(n, DictConfig) and isinstance(o, DictConfig) and n.get("name") and n.get("name") != o.get("name"):
                    if out is base:
                        out = base.copy()
                    OmegaConf.update(out, f"{key}.{split}", {}, merge=False, force_add=True)
        else:
            child = _drop_renamed_processors(old, new)
            if child is not old:
                if out is base:
                    out = base.copy()
                out[key] = child
    return out


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def validate_against(base: DictConfig, override: DictConfig, source: str, prefix: str = "") -> None:
    """Raise ConfigError if ``override`` has a key ``base`` lacks, or a value of the wrong type."""
    if _is_open(base) or _is_processor_spec(prefix):
        return
    for key in override.keys():
        if key == _OPEN:
            continue
        dotted = f"{prefix}{key}"
        if key not in base:
            valid = [k for k in base.keys() if k != _OPEN]
            close = difflib.get_close_matches(str(key), [str(k) for k in valid], n=1, cutoff=0.5)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown config key '{dotted}' in {source}.{hint} Valid keys here: {', '.join(map(str, valid)) or '(none)'}"
            )
        if OmegaConf.is_missing(override, key) or _is_interpolation(override, key) or _is_interpolation(base, key):
            continue
        new = override[key]
        old = base[key] if not OmegaConf.is_missing(base, key) else None
        if isinstance(old, float) and isinstance(new, str) and _FLOAT_TEXT.fullmatch(new.strip()):
            # YAML 1.1 reads "2e-3" (no dot) as a string; where the key is a float, it means the number.
            new = float(new)
            override[key] = new
        if not _type_ok(old, new):
            raise ConfigError(
                f"config key '{dotted}' in {source} must be {_type_name(old)} (default {old!r}), got {_type_name(new)} {new!r}"
            )
        if isinstance(old, DictConfig) and isinstance(new, DictConfig):
            validate_against(old, new, source, prefix=f"{dotted}.")


def _is_interpolation(node: DictConfig, key: Any) -> bool:
    try:
        return OmegaConf.is_interpolation(node, key)
    except Exception:
        return False


def merge_validated(base: DictConfig, override: DictConfig | Mapping | None, source: str) -> DictConfig:
    """Validate ``override`` against ``base`` then merge it on top (returns a new config)."""
    if override is None:
        return base
    if not isinstance(override, DictConfig):
        try:
            override = OmegaConf.create(dict(override))
        except Exception as exc:  # omegaconf: unsupported value types, bad ${...} syntax, odd keys
            raise ConfigError(f"{source}: cannot use these overrides as a config: {_first_line(exc)}") from exc
    validate_against(base, override, source)
    base = _drop_renamed_processors(base, override)
    try:
        merged = OmegaConf.merge(base, override)
    except Exception as exc:  # omegaconf's own checks (e.g. a structured node) come last; name the source
        raise ConfigError(f"cannot merge the config from {source}: {_first_line(exc)}") from exc
    return merged  # type: ignore[return-value]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def parse_options(options: Iterable[str] | None) -> DictConfig:
    """Parse ``key=value`` command-line overrides (values in yaml syntax)."""
    items: dict[str, Any] = {}
    for opt in options or []:
        if "=" not in opt:
            raise ConfigError(f"--options entry {opt!r} is not key=value (example: run.max_epoch=3)")
        key, raw = opt.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--options entry {opt!r} has an empty key")
        if any(not part.strip() for part in key.split(".")):
            raise ConfigError(f"--options entry {opt!r}: the key {key!r} has an empty part; write dotted keys like run.max_epoch")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--options {key}: cannot parse value {raw!r}: {exc}") from exc
        items[key] = value
    cfg = OmegaConf.create()
    for key, value in items.items():
        try:
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)
        except Exception as exc:  # omegaconf: bad ${...} syntax, yaml dates and other unsupported values
            raise ConfigError(f"--options {key}={value!r}: not a usable config value ({_first_line(exc)}); quote it or fix the syntax") from exc
    return cfg


# -- the cache directory ----------------------------------------------------------------------
def get_cache_dir(cfg: Any = None) -> Path:
    """``$LAVISLITE_CACHE`` > ``run.cache_dir`` / ``cache_dir`` in ``cfg`` > ``~/.cache/lavislite``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    if cfg is not None:
        node = cfg.get("run", cfg) if hasattr(cfg, "get") else None
        value = node.get("cache_dir") if node is not None and hasattr(node, "get") else None
        if value:
            return Path(str(value)).expanduser()
    return Path("~/.cache/lavislite").expanduser()


# -- model configs ----------------------------------------------------------------------------
def model_type_config(model_cls: Any, model_type: str, overrides: Mapping[str, Any] | None = None) -> DictConfig:
    """The ``{model:, preprocess:}`` config of one model type, with keyword overrides validated.

    Overrides are keys of the ``model`` section (``image_size=224``, ``tokenizer="/path"``) or dotted
    paths into ``preprocess`` (``{"preprocess.vis_processor.eval.image_size": 224}``).
    """
    path = model_cls.default_config_path(model_type)
    cfg = load_yaml(path)
    if "model" not in cfg:
        raise ConfigError(f"{path}: a model type yaml needs a top-level 'model:' section")
    return apply_overrides(cfg, overrides, "keyword overrides")


def apply_overrides(cfg: DictConfig, overrides: Mapping[str, Any] | None, source: str) -> DictConfig:
    """``cfg`` (a ``{model:, preprocess:}`` config) with ``load_model``-style keyword overrides validated and merged.

    A plain key is a key of the ``model`` section; ``model.``/``preprocess.`` dotted keys name their path.
    """
    if not overrides:
        return cfg
    model_over: dict[str, Any] = {}
    other = OmegaConf.create()
    for key, value in overrides.items():
        if value is None and key == "checkpoint":
            continue
        if key.startswith("preprocess.") or key.startswith("model."):
            OmegaConf.update(other, key, value, merge=True, force_add=True)
        else:
            model_over[key] = value
    if model_over:
        other = OmegaConf.merge(other, {"model": model_over})
    return merge_validated(cfg, other, source)


def to_kwargs(cfg: Any, cls: Any, *, skip: Iterable[str] = ("name",)) -> dict[str, Any]:
    """Turn a config section into constructor keyword arguments, rejecting unknown keys."""
    if cfg is None:
        return {}
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else dict(cfg)
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping of options, got {data!r}")
    sig = inspect.signature(cls.__init__)
    params = {n for n, p in sig.parameters.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    out = {}
    for key, value in data.items():
        if key in skip:
            continue
        if key not in params and not takes_any:
            close = difflib.get_close_matches(key, sorted(params), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{cls.__name__} has no option {key!r}.{hint} Options: {', '.join(sorted(params))}")
        out[key] = value
    return out


def constructor_kwargs(cfg: Any, cls: Any, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The keys of config section ``cfg`` that name parameters of ``cls.__init__`` (less ``exclude``).

    A ``from_config`` passes these and nothing else: a key the config leaves out takes the constructor's
    default, so each default is written once, in the signature. Other keys (``arch``, checkpoint and
    backbone settings) are read by whoever builds those parts.
    """
    if cfg is None:
        return {}
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else dict(cfg)
    skip = set(exclude)
    params = inspect.signature(cls.__init__).parameters.values()
    names = [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return {name: data[name] for name in names if name in data and name not in skip}


# -- run configs ------------------------------------------------------------------------------
def _section(cfg: DictConfig, key: str) -> Any:
    return cfg.get(key) if key in cfg else None


def build_run_config(cfg_path: str | Path, options: Iterable[str] | None = None) -> DictConfig:
    """The merged, validated config of a run: defaults < model < datasets < project < --options."""
    from lavislite.common.registry import registry

    cfg_path = Path(cfg_path)
    project = load_yaml(cfg_path)
    cli = parse_options(options)
    source = str(cfg_path)

    for key in project.keys():
        # preprocess: the model type's processors, present in every saved run config (which can be re-run)
        if key not in ("model", "datasets", "run", "preprocess"):
            raise ConfigError(
                f"unknown top-level section '{key}' in {source}; a project yaml has model:, datasets:, run: "
                "(and optionally preprocess:)"
            )

    # Plugins first: the project may name models, builders or tasks that live in the user's modules.
    imports = list(_get(project, "run.imports") or []) + list(_get(cli, "run.imports") or [])
    registry.import_modules(imports)

    cfg = load_yaml(DEFAULT_CONFIG)
    source_of = lambda key: "--options" if _get(cli, key) is not None else source  # noqa: E731

    # Model: the type's yaml is the schema of the project's model section.
    arch = _get(cli, "model.arch") or _get(project, "model.arch")
    if arch:
        model_type = _get(cli, "model.model_type") or _get(project, "model.model_type")
        if not model_type:
            raise ConfigError(f"{source_of('model.arch')}: model.model_type is required with model.arch={arch!r}")
        model_cls = registry.get_model_class(arch)
        model_defaults = load_yaml(model_cls.default_config_path(model_type))
        cfg = OmegaConf.merge(cfg, {"model": model_defaults.get("model", {}), "preprocess": model_defaults.get("preprocess", {})})
        OmegaConf.update(cfg, "model.checkpoint", cfg.model.get("checkpoint"), force_add=True)
    elif "model" in project or "model" in cli:
        raise ConfigError(f"{source}: the model section needs 'arch' (a registered model name) and 'model_type'")

    # Datasets: each builder's yaml is the schema of its section.
    names = list((_section(project, "datasets") or {}).keys()) + [
        n for n in (_section(cli, "datasets") or {}).keys() if n not in (_section(project, "datasets") or {})
    ]
    for name in names:
        builder_cls = registry.get_builder_class(name)
        dtype = _get(cli, f"datasets.{name}.type") or _get(project, f"datasets.{name}.type") or "default"
        ds_defaults = load_yaml(builder_cls.default_config_path(dtype))
        cfg = OmegaConf.merge(cfg, {"datasets": {name: ds_defaults.datasets.get(name, ds_defaults.datasets)}})
    if not names and ("datasets" in project or "datasets" in cli):
        cfg = OmegaConf.merge(cfg, {"datasets": {}})  # valid here; the task names what is missing

    # Run: the task and runner add their own keys to the schema.
    for kind, key in (("task", "run.task"), ("runner", "run.runner")):
        name = _get(cli, key) or _get(project, key) or _get(cfg, key)
        if name:
            klass = registry.tasks.get(name) if kind == "task" else registry.runners.get(name)
            extra = getattr(klass, "RUN_DEFAULTS", None)
            if extra:
                cfg = OmegaConf.merge(cfg, {"run": dict(extra)})

    cfg = merge_validated(cfg, project, source)
    cfg = merge_validated(cfg, cli, "--options")
    if not cfg.run.get("run_name"):
        cfg.run.run_name = cfg_path.stem
    return cfg


def _get(cfg: Any, dotted: str) -> Any:
    try:
        return OmegaConf.select(cfg, dotted, default=None)
    except Exception:
        return None
