"""Model folders: a trained model that loads by itself, with no other argument.

Every training run writes one as ``<run_dir>/model/``; ``lavislite export``, ``model.save_pretrained(dir)``
and ``lavislite.export_model(model, dir)`` write one for any loaded model::

    lavislite_model.yaml   format version, the resolved ``model:`` config (architecture, sizes, options),
                           the ``preprocess:`` processors and the plugin modules (``imports:``) to load first
    model.safetensors      the full state dict (momentum encoders and queues included)
    tokenizer/             the tokenizer: vocab.txt plus transformers' ``save_pretrained`` files

The yaml is written last, so a folder whose writing was interrupted has none and is reported incomplete.
``load_model("path/to/folder")`` (or a run directory holding ``model/``) rebuilds the model from the
yaml and loads the weights strictly: they came from this very model. A transformers BLIP directory
(``config.json`` and weights) is not a model folder; it stays a ``checkpoint=`` source of a named type.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from lavislite.common.errors import ConfigError

CONFIG_FILE = "lavislite_model.yaml"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
RUN_SUBDIR = "model"  # where a run directory keeps its model folder
FORMAT = 1

# a model folder's weights are its own: load them as a resume would, with the load settings pinned
_PINNED = {"load_finetuned": False, "load_pretrained": False, "finetuned": None, "pretrained": None}


def find(path: Any) -> Path | None:
    """The model folder at ``path`` (the folder itself or a run directory's ``model/``), else None.

    Raises ``ConfigError`` for what is clearly meant as one but cannot load: a run directory whose
    training wrote no model folder, or a folder holding our weights and tokenizer but no yaml.
    """
    if not isinstance(path, (str, os.PathLike)):
        return None
    p = Path(path).expanduser()
    if not p.is_dir():
        return None
    for candidate in (p, p / RUN_SUBDIR):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
        if (candidate / WEIGHTS_FILE).is_file() and (candidate / TOKENIZER_DIR).is_dir() and not (candidate / "config.json").is_file():
            raise ConfigError(
                f"model folder {candidate}: {CONFIG_FILE} is missing (writing it is the last step, so the folder is "
                f"incomplete); write it again with `lavislite export` or model.save_pretrained(dir)"
            )
    if (p / "config.yaml").is_file() and (p / "metrics.jsonl").is_file():
        raise ConfigError(
            f"{p} is a run directory without a {RUN_SUBDIR}/ folder: the run did not finish training (or only "
            f"evaluated). Resume it (--resume {p / 'checkpoint_latest.pth'}) or use --checkpoint with a model type"
        )
    return None


def read_config(folder: str | os.PathLike) -> DictConfig:
    """The folder's ``{model:, preprocess:}`` config, every part of the folder checked (errors name the file)."""
    from lavislite.common.config import load_yaml

    folder = Path(folder)
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise ConfigError(f"model folder {folder}: {CONFIG_FILE} is missing; write the folder with `lavislite export` or model.save_pretrained(dir)")
    cfg = load_yaml(cfg_path)
    fmt = cfg.get("format")
    if fmt != FORMAT:
        raise ConfigError(f"{cfg_path}: format {fmt!r} is not {FORMAT}, the one this lavislite reads; export the model again with this version")
    model = cfg.get("model")
    if not isinstance(model, DictConfig) or not model.get("arch") or not model.get("model_type"):
        raise ConfigError(f"{cfg_path}: needs a 'model:' section with 'arch' and 'model_type'")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(f"model folder {folder}: {WEIGHTS_FILE} is missing (the weights); copy the whole folder or export it again")
    if model.get("tokenizer") == TOKENIZER_DIR and not (folder / TOKENIZER_DIR / "vocab.txt").is_file():
        raise ConfigError(f"model folder {folder}: {TOKENIZER_DIR}/vocab.txt is missing (the tokenizer); copy the whole folder or export it again")
    return cfg


def load_config(folder: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> DictConfig:
    """The config that rebuilds the folder's model: its yaml, local paths filled in, ``overrides`` on top.

    Overrides follow ``load_model``'s rules (validated against the folder's own config). ``arch=NAME``
    builds another head from the same weights (e.g. an ITM head from a retrieval model): the folder's
    architecture keys are kept, and the weights load non-strictly since that head uses a part of them.
    """
    from lavislite.common.config import apply_overrides
    from lavislite.common.registry import registry

    folder = Path(folder).resolve()
    cfg = read_config(folder)
    registry.import_modules(list(cfg.get("imports") or []))
    own_arch = str(cfg.model.arch)
    for key, value in _PINNED.items():
        OmegaConf.update(cfg, f"model.{key}", value, force_add=True)
    OmegaConf.update(cfg, "model.checkpoint", str(folder / WEIGHTS_FILE), force_add=True)
    OmegaConf.update(cfg, "model.strict_load", True, force_add=True)
    if cfg.model.get("tokenizer") == TOKENIZER_DIR:
        cfg.model.tokenizer = str(folder / TOKENIZER_DIR)
    cfg = apply_overrides(cfg, overrides, f"the overrides of model folder {folder}")
    if str(cfg.model.arch) != own_arch and not (overrides and "strict_load" in overrides):
        cfg.model.strict_load = False
    return cfg


def save(
    model: Any,
    out_dir: str | os.PathLike,
    *,
    model_config: Any = None,
    preprocess: Any = None,
    imports: Any = (),
) -> Path:
    """Write ``model`` as a model folder at ``out_dir`` (see the module docstring); returns the folder.

    ``model_config`` is the ``model:`` section it was built from (default: the one recorded when it was
    built); ``preprocess`` the processors (default: those it was loaded with, else its type's), their
    image size following ``model.image_size``; ``imports`` the plugin modules that register its classes
    (default: those of the folder it was loaded from, plus the model class's own module when it is not
    lavislite's). An existing model folder at ``out_dir`` is replaced.
    """
    from lavislite.common.checkpoint import save_checkpoint
    from lavislite.processors.sizes import follow_image_size

    out = Path(out_dir).expanduser()
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / CONFIG_FILE).is_file()):
        raise ConfigError(f"{out} exists and is not a model folder; write the model folder to a new or empty directory")
    model_cfg = model_config if model_config is not None else getattr(model, "_model_cfg", None)
    if model_cfg is None:
        raise ConfigError(
            f"{type(model).__name__} has no recorded config (it was not built by from_config/load_model); pass model_config="
        )
    data = _plain(model_cfg)
    if not data.get("arch") or not data.get("model_type"):
        raise ConfigError(f"the model config of {type(model).__name__} lacks 'arch' or 'model_type'; both name what to rebuild")
    data.update(_PINNED)
    data["checkpoint"] = None
    data.pop("strict_load", None)  # loading pins it: the folder's weights are this model's
    if preprocess is None:
        preprocess = getattr(model, "_preprocess_cfg", None)
    if preprocess is None:
        preprocess = _type_preprocess(data["arch"], data["model_type"])
    prep = follow_image_size(OmegaConf.create(_plain(preprocess)), data.get("image_size"))

    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).unlink(missing_ok=True)  # a half-rewritten folder must not look complete
    save_checkpoint(model, out / WEIGHTS_FILE)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        _save_tokenizer(tokenizer, out / TOKENIZER_DIR)
        data["tokenizer"] = TOKENIZER_DIR
    imports = list(imports or getattr(model, "_imports", None) or ())
    module = type(model).__module__
    if not module.startswith("lavislite.") and module not in imports:
        imports.append(module)  # a plugin class: its module registers it when the folder is loaded
    doc = {"format": FORMAT, "imports": [str(m) for m in imports or ()], "model": data, "preprocess": OmegaConf.to_container(prep)}
    _write_text(out / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(doc)))
    return out


def _plain(node: Any) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node or {})


def _type_preprocess(arch: str, model_type: str) -> Any:
    from lavislite.common.config import load_yaml
    from lavislite.common.registry import registry

    cls = registry.get_model_class(arch)
    try:
        return load_yaml(cls.default_config_path(model_type)).get("preprocess") or {}
    except ConfigError:  # a type defined only by its run config: no processors of its own
        return {}


def _save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """``save_pretrained`` plus ``vocab.txt`` (transformers 5 writes only tokenizer.json; the loader reads vocab.txt)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    base = int(tokenizer.vocab_size)  # the WordPiece vocabulary; [DEC]/[ENC] are added on loading
    tokens = [t for t, i in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]) if i < base]
    if len(tokens) != base:
        raise ConfigError(f"the tokenizer's vocabulary has gaps ({len(tokens)} tokens for ids 0..{base - 1}); it cannot be written as vocab.txt")
    _write_text(folder / "vocab.txt", "".join(t + "\n" for t in tokens))


def _write_text(path: Path, text: str) -> None:
    from lavislite.common.download import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
