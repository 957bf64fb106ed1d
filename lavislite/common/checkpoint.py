"""The one checkpoint loader for every lavislite model, and the matching (atomic) savers.

Sources: an http(s) URL (fetched once into the cache), a ``.pth/.pt/.bin`` file (``{'model': sd}``,
``{'state_dict': sd}`` or a bare state dict), a ``.safetensors`` file, a sharded checkpoint's
``*.index.json``, a transformers-format directory or a hub id such as ``Salesforce/blip-image-captioning-base``.

This module knows no model family. Foreign key layouts are rewritten by *checkpoint converters* that
families register (``registry.register_checkpoint_converter``) and that a model names in its
``checkpoint_converters``; a tensor whose shape differs from the model's (a position embedding for
another image size) is offered to the ``resize_checkpoint_tensor`` hook of the module that owns it.

Pickles are only ever read with ``torch.load(..., weights_only=True)``: a file that needs anything
beyond tensors and plain containers is refused, never executed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import re
import shutil
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Protocol, runtime_checkable

import torch
from torch import nn

from lavislite.common.download import atomic_write, cached_path, default_cache_dir, is_offline, is_url
from lavislite.common.errors import CheckpointError

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
Shape = tuple[int, ...]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
# transformers layouts, in order of preference
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_ALIASES_META = "lavislite_aliases"  # safetensors metadata: {dropped duplicate name: kept name}
_IGNORED = re.compile(r"(^|\.)embeddings\.position_ids$")  # a fixed arange buffer; never worth loading
# strict=None (the default) refuses garbage: a checkpoint that leaves more than MAX_UNLOADED_FRACTION of
# the model's parameters (elements, tied tensors once) missing or shape-mismatched, or whose tensors for
# the model's parameters are dropped for their shape beyond MAX_DROPPED_FRACTION of what it offers (a
# vocabulary or width of another size: the architecture differs). Measured legitimate partial loads:
# NLVR from a pre-training checkpoint leaves 3.1% (full size) and 4.5% (the demo's tiny model) unloaded
# (new merge layers and classifier); pre-training into the other heads 0.2% or less, nothing dropped.
MAX_UNLOADED_FRACTION = 0.10
MAX_DROPPED_FRACTION = 0.01


# -- reading ------------------------------------------------------------------------------------
@runtime_checkable
class CheckpointConverter(Protocol):
    """Rewrites one foreign key layout (e.g. transformers' names) into a model family's own names."""

    def detect(self, keys: Collection[str]) -> bool:
        """True when a state dict with these keys is in this converter's format."""

    def convert(self, state_dict: StateDict) -> StateDict:
        """The same weights under the family's names (raise ``CheckpointError`` for keys it cannot map)."""


def convert_state_dict(sd: StateDict, converters: Iterable[str | CheckpointConverter]) -> tuple[StateDict, str | None]:
    """``sd`` rewritten by the first converter whose ``detect`` accepts its keys, and that converter's name.

    ``converters`` holds registered names (``registry.register_checkpoint_converter``) or converter
    objects; ``(sd, None)`` when none applies.
    """
    for spec in converters:
        if isinstance(spec, str):
            from lavislite.common.registry import registry

            converter, name = registry.get_checkpoint_converter(spec), spec
        else:
            converter, name = spec, getattr(spec, "name", type(spec).__name__)
        if converter.detect(sd.keys()):
            return converter.convert(sd), name
    return sd, None


def read_state_dict(
    source: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    converters: Iterable[str | CheckpointConverter] = (),
) -> StateDict:
    """A flat ``{name: tensor}`` state dict from a URL, file, directory or hub id.

    Keys are as stored, unless one of ``converters`` (see :func:`convert_state_dict`) recognises them.
    """
    return convert_state_dict(_read_source(source, cache_dir), converters)[0]


def _read_source(source: str | os.PathLike, cache_dir: str | os.PathLike | None) -> StateDict:
    if is_url(source):
        path = cached_path(source, cache_dir=cache_dir)
        try:
            return _read_file(path)
        except CorruptCheckpointError as exc:
            if is_offline():
                raise
            # a cached download that no longer parses (disk trouble, an older non-atomic writer): fetch it once more
            logger.warning("Cached %s is unreadable (%s); deleting it and downloading %s again", path, exc, source)
            path.unlink(missing_ok=True)
            return _read_file(cached_path(source, cache_dir=cache_dir))
    path = Path(source).expanduser()
    if path.is_file():
        return _read_file(path)
    if path.is_dir():
        from lavislite.models import folder as model_folder

        found = model_folder.find(path)  # a lavislite model folder (or a run directory holding one): its weights
        if found is not None:
            model_folder.read_config(found)
            return _read_file(found / model_folder.WEIGHTS_FILE)
        return _read_hf_dir(path, str(source))
    if isinstance(source, str) and _HUB_ID.match(source) and not source.endswith((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX)):
        return _read_hf_dir(_snapshot_hub(source, cache_dir), source)
    raise CheckpointError(
        f"Checkpoint {source!r} not found: it is not an existing file or directory, nor an http(s) URL or a "
        "hub id like 'Salesforce/blip-image-captioning-base'. Check the path."
    )


class CorruptCheckpointError(CheckpointError):
    """The file is truncated or garbled (as opposed to unsafe or of the wrong kind)."""


def _read_file(path: Path) -> StateDict:
    name = path.name.lower()
    if name.endswith(".index.json"):
        sd = _read_sharded(path)
    elif name.endswith((SAFETENSORS_SUFFIX, *TORCH_SUFFIXES)):
        sd = _read_plain(path)
    else:
        raise CheckpointError(
            f"Unknown checkpoint format: {path}. lavislite reads {', '.join(TORCH_SUFFIXES)} (torch), "
            f"{SAFETENSORS_SUFFIX}, a transformers directory or a hub id; rename the file if it is one of these."
        )
    return sd


def is_unsafe_pickle_error(exc: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused the file for holding non-tensor objects."""
    return isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower()


def refusal_message(path: Path) -> str:
    """lavislite's message for a pickle that needs more than tensors (torch's own suggests weights_only=False)."""
    return (
        f"Refused to load {path}: it contains non-tensor objects that only a full unpickle could build, and "
        "lavislite never unpickles arbitrary code (torch.load weights_only=True). If you trust the file, re-save "
        "its tensors only, e.g. torch.save({'model': sd}, 'clean.pth') where sd holds only tensors, or convert it "
        "to .safetensors."
    )


def _torch_load(path: Path) -> Any:
    try:
        # mmap avoids a second in-memory copy of the file; only the zip format (torch >= 1.6) supports it
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        if not is_unsafe_pickle_error(e):
            raise CorruptCheckpointError(f"Could not read {path}: {e}. The file looks truncated or corrupt; download it again.") from e
        raise CheckpointError(refusal_message(path)) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CorruptCheckpointError(f"Could not read {path}: {e}. The file looks truncated or corrupt; download it again.") from e


def _unwrap(obj: Any, path: Path) -> StateDict:
    """The state dict inside ``{'model': sd}``, ``{'state_dict': sd}`` or a bare state dict."""
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{path} holds {type(obj).__name__}{' (empty)' if isinstance(obj, Mapping) else ''}, not a state dict. "
            "Expected {'model': state_dict}, {'state_dict': state_dict} or a bare {name: tensor} dict."
        )
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{path} is not a state dict: entries {bad[:5]} are not tensors (top-level keys: {list(obj)[:10]}). "
            "Expected {'model': state_dict}, {'state_dict': state_dict} or a bare {name: tensor} dict."
        )
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):  # saved from a DistributedDataParallel wrapper
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            sd = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptCheckpointError(f"Could not read {path}: {e}. The file looks truncated or is not safetensors.") from e
    for alias, kept in json.loads(meta.get(_ALIASES_META, "{}")).items():
        sd[alias] = sd[kept]  # restore names dropped as duplicates by save_checkpoint
    return sd


def _read_sharded(index: Path) -> StateDict:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index} is not a valid sharded-checkpoint index (needs a 'weight_map'): {e}") from e
    sd: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{index} lists the shard {shard}, but {shard_path} does not exist; download it too.")
        sd.update(_read_plain(shard_path))  # converters see the merged dict: one shard alone may not look foreign
    return sd


def _read_hf_dir(directory: Path, source: str) -> StateDict:
    for name in HF_WEIGHT_FILES:
        if (directory / name).is_file():
            path = directory / name
            return _read_sharded(path) if name.endswith(".index.json") else _read_plain(path)
    raise CheckpointError(
        f"{source}: the directory {directory} holds no transformers weights (looked for {', '.join(HF_WEIGHT_FILES)}; "
        f"found {sorted(p.name for p in directory.iterdir())[:10]}). Point at the weight file itself or a complete model directory."
    )


def _read_plain(path: Path) -> StateDict:
    if path.name.endswith(SAFETENSORS_SUFFIX):
        return _read_safetensors(path)
    return _unwrap(_torch_load(path), path)


def _snapshot_hub(repo_id: str, cache_dir: str | os.PathLike | None) -> Path:
    """Download (or find in the cache) the weights of a hub repo; offline -> a clear error."""
    from huggingface_hub import snapshot_download

    hub_cache = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / "huggingface"
    offline = is_offline()
    try:
        folder = Path(
            snapshot_download(repo_id, cache_dir=str(hub_cache), local_files_only=offline, allow_patterns=["*.json", "model*.safetensors"])
        )
        if not any((folder / n).is_file() for n in HF_WEIGHT_FILES):
            folder = Path(
                snapshot_download(repo_id, cache_dir=str(hub_cache), local_files_only=offline, allow_patterns=["*.json", "pytorch_model*.bin"])
            )
    except Exception as e:  # huggingface_hub raises many types (HTTP, offline, not found, network)
        mode = "offline mode is on and it is not cached" if offline else f"{type(e).__name__}: {e}"
        raise CheckpointError(
            f"Could not fetch the hub repo {repo_id!r} ({mode}); no local file or directory of that name exists either. "
            f"Download it where the hub is reachable (huggingface-cli download {repo_id} --local-dir DIR) and pass DIR, "
            "or pass a local .pth/.safetensors file."
        ) from e
    return folder


# -- loading into a model -----------------------------------------------------------------------
@dataclass
class LoadReport:
    """What ``load_checkpoint`` did. Shapes are (checkpoint shape, model shape)."""

    source: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    interpolated: list[tuple[str, Shape, Shape]] = field(default_factory=list)  # resized by the owner's hook
    ignored: list[str] = field(default_factory=list)
    converter: str | None = None  # the checkpoint converter that rewrote the keys, if any
    unloaded_fraction: float = 0.0  # of the model's parameter elements: missing or shape-mismatched
    dropped_fraction: float = 0.0  # of the checkpoint's elements for the model's parameters: dropped for their shape

    @property
    def clean(self) -> bool:
        """True when every model key was loaded and every checkpoint key used (interpolation allowed)."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = [f"checkpoint {self.source}:"]
        for label, items in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape-mismatched (ckpt, model)", [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched]),
            ("interpolated", [f"{k} {tuple(a)} -> {tuple(b)}" for k, a, b in self.interpolated]),
            ("ignored", self.ignored),
        ):
            if items:
                parts.append(f"{len(items)} {label}: {summarize_keys(items)}")
        if self.unloaded_fraction:
            parts.append(f"({self.unloaded_fraction:.1%} of the model's parameters not loaded)")
        return " ".join(parts) if len(parts) > 1 else f"checkpoint {self.source}: all keys loaded"


def summarize_keys(keys: list[str], limit: int = 20) -> str:
    """A short listing: layer indices collapsed (``layer.*.x`` x12), at most ``limit`` patterns."""
    counts: dict[str, int] = defaultdict(int)
    for key in keys:
        counts[re.sub(r"\.\d+\.", ".*.", key)] += 1
    shown = [f"{p} x{n}" if n > 1 else p for p, n in list(counts.items())[:limit]]
    more = len(counts) - limit
    return ", ".join(shown) + (f", ... ({more} more patterns)" if more > 0 else "")


def tied_groups(state: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """Groups of names (2+) that are the very same tensor data, e.g. a decoder tied to word embeddings."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for name, t in state.items():
        if t.device.type == "meta" or t.numel() == 0:
            continue  # no real storage to compare
        groups[(t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)].append(name)
    return [names for names in groups.values() if len(names) > 1]


def load_checkpoint(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    strict: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    build_fresh: Callable[[], nn.Module] | None = None,
) -> LoadReport:
    """Load ``source`` (URL, file, directory, hub id or a state dict) into ``model``.

    Rewrites foreign key layouts with the first of the model's ``checkpoint_converters`` (registered
    names) that recognises them, runs the model's ``adapt_state_dict`` hook, drops
    ``*.embeddings.position_ids``, offers every tensor of another shape to the owning module's
    ``resize_checkpoint_tensor`` hook (:func:`resize_to_model`; BLIP's ViT interpolates its ``pos_embed``),
    drops the shape-mismatched rest (they stay as initialised) and loads the rest. Missing, unexpected
    and mismatched keys are logged as warnings and listed in the returned :class:`LoadReport`.

    ``strict`` decides what is refused (``CheckpointError``, raised before the model is touched):

    - ``True``: any missing, unexpected or shape-mismatched key (an exact fit);
    - ``None`` (default): a partial load is fine, garbage is not: refused when more than
      ``MAX_UNLOADED_FRACTION`` (10%) of the model's parameters stay missing or shape-mismatched, or more
      than ``MAX_DROPPED_FRACTION`` (1%) of the checkpoint's tensors for them are dropped for their shape
      (a vocabulary, width or depth of another size);
    - ``False``: nothing; whatever fits is loaded.

    Tied weights (one tensor under several names) count as loaded when any one of their names is present.

    A model built on the meta device (``BaseModel.build_and_load``: no random init that the checkpoint
    would overwrite) takes the checkpoint's tensors as its own (``assign``, no copy; a memory-mapped
    ``.pth`` is paged in on use); tied weights are re-tied, and every tensor the checkpoint does not
    cover is taken from ``build_fresh()``, a normally initialised twin of the model.
    """
    label = "<state dict>" if isinstance(source, Mapping) else str(source)
    sd = dict(source) if isinstance(source, Mapping) else _read_source(source, cache_dir)
    sd, converter = convert_state_dict(sd, getattr(model, "checkpoint_converters", ()))
    adapt = getattr(model, "adapt_state_dict", None)
    if callable(adapt):
        sd = adapt(sd)
    report = LoadReport(source=label, converter=converter)

    report.ignored = [k for k in sd if _IGNORED.search(k)]
    for k in report.ignored:
        del sd[k]

    model_state = model.state_dict()
    for key in list(sd):
        target = model_state.get(key)
        if target is None or sd[key].shape == target.shape:
            continue
        resized = resize_to_model(model, key, sd[key], target.shape)
        if resized is not None:
            report.interpolated.append((key, tuple(sd[key].shape), tuple(target.shape)))
            sd[key] = resized
            continue
        report.mismatched.append((key, tuple(sd[key].shape), tuple(target.shape)))
        del sd[key]

    tied = {name: group for group in _tied_names(model) for name in group}
    present = set(sd)

    def really_missing(key: str) -> bool:
        return not _IGNORED.search(key) and not any(alias in present for alias in tied.get(key, ()))

    # decide before touching the model, so a refused checkpoint leaves it as it was
    missing = [k for k in model_state if k not in present and really_missing(k)]
    report.unloaded_fraction, report.dropped_fraction = _lost_fractions(model, present, report.mismatched)
    if strict:
        _raise_if_unfit(model, label, missing, [k for k in sd if k not in model_state], report.mismatched)
    elif strict is None and (report.unloaded_fraction > MAX_UNLOADED_FRACTION or report.dropped_fraction > MAX_DROPPED_FRACTION):
        raise CheckpointError(_garbage_message(model, label, report, missing, [k for k in sd if k not in model_state]))

    if any(t.is_meta for _, t in _named_tensors(model)):
        result = _load_into_meta(model, sd, model_state, build_fresh)
    else:
        result = model.load_state_dict(sd, strict=False)
    report.missing = [k for k in result.missing_keys if really_missing(k)]
    report.unexpected = list(result.unexpected_keys)
    if strict:  # load hooks of custom modules can change the picture; re-check with the real result
        _raise_if_unfit(model, label, report.missing, report.unexpected, report.mismatched)
    _log(report, model)
    return report


def _lost_fractions(model: nn.Module, present: Collection[str], mismatched: list[tuple[str, Shape, Shape]]) -> tuple[float, float]:
    """``(unloaded, dropped)``, counting parameters only (buffers such as feature queues may differ).

    unloaded: the model's parameter elements (tied tensors once) that no key in ``present`` supplies;
    dropped: the checkpoint's elements for the model's parameters that were dropped for their shape (a
    decoder's 30524-row vocabulary is lost in full when the model has 202 rows).
    """
    names: dict[int, list[str]] = defaultdict(list)
    sizes: dict[int, int] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names[id(p)].append(name)
        sizes[id(p)] = p.numel()
    total = sum(sizes.values())
    unloaded = sum(sizes[i] for i, group in names.items() if not any(n in present for n in group))
    params = {n for group in names.values() for n in group}
    dropped = sum(math.prod(ckpt) for k, ckpt, _ in mismatched if k in params)
    offered = dropped + sum(sizes[i] for i, group in names.items() for n in group if n in present)
    return (unloaded / total if total else 0.0), (dropped / offered if offered else 0.0)


def _garbage_message(model: nn.Module, label: str, report: LoadReport, missing: list[str], unexpected: list[str]) -> str:
    """One line: how much stays unloaded, the first keys, the likely cause and the way out."""
    name = type(model).__name__
    missing = [k for k in missing if k not in {k for k, _, _ in report.mismatched}]  # mismatched ones are named below
    found = []
    if report.mismatched:
        found.append(f"{len(report.mismatched)} shape-mismatched, e.g. " + ", ".join(
            f"{k} {tuple(a)} (checkpoint) vs {tuple(b)} (model)" for k, a, b in report.mismatched[:3]))
    if missing:
        found.append(f"{len(missing)} missing, e.g. {', '.join(missing[:3])}")
    if unexpected:
        found.append(f"{len(unexpected)} unexpected, e.g. {', '.join(unexpected[:3])}")
    return (
        f"Checkpoint {label} does not fit {name}: {report.unloaded_fraction:.0%} of the model's parameters would stay "
        f"unloaded and {report.dropped_fraction:.0%} of the checkpoint's would be dropped for their shape (a partial load "
        f"may leave {MAX_UNLOADED_FRACTION:.0%} and drop {MAX_DROPPED_FRACTION:.0%}): {'; '.join(found)}. Likely cause: "
        f"{_likely_cause(report, missing, unexpected)}. "
        f"Use the checkpoint made for this model, or pass strict=False to load what fits anyway."
    )


def _likely_cause(report: LoadReport, missing: list[str], unexpected: list[str]) -> str:
    for key, ckpt, model in report.mismatched:
        if len(ckpt) == 2 == len(model) and ckpt[1] == model[1] and ckpt[0] != model[0] and "embed" in key:
            return (
                f"a wrong vocabulary size: {key} has {ckpt[0]} rows in the checkpoint and {model[0]} in the model; use the "
                f"tokenizer the checkpoint was trained with, or set the model's vocab_size to {ckpt[0]}"
            )
        if "pos" in key and "embed" in key and ckpt[-1] == model[-1]:
            return f"a wrong image size: {key} is {tuple(ckpt)} in the checkpoint and {tuple(model)} in the model"
    if report.mismatched and len(report.mismatched) >= len(missing):
        return "a model of another size (width, depth, patch size or a tiny/base/large config that differs from the checkpoint's)"
    if unexpected and len(unexpected) >= len(missing) / 2:
        return "a checkpoint of another model type (its keys do not name this model's modules)"
    return "an incomplete checkpoint (truncated, a partial export, or one made for a smaller model)"


def _named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter and buffer under every name it has (tied ones repeated)."""
    yield from model.named_parameters(remove_duplicate=False)
    yield from model.named_buffers(remove_duplicate=False)


def _tied_names(model: nn.Module) -> list[list[str]]:
    """Groups of names (2+) of one tensor object: the LM head tied to the word embeddings, shared modules."""
    groups: dict[int, list[str]] = defaultdict(list)
    for name, t in _named_tensors(model):
        groups[id(t)].append(name)
    return [names for names in groups.values() if len(names) > 1]


def _set_tensor(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner)
    (module._parameters if leaf in module._parameters else module._buffers)[leaf] = tensor


def _load_into_meta(model: nn.Module, sd: StateDict, model_state: StateDict, build_fresh: Callable[[], nn.Module] | None) -> Any:
    """Load a meta-device model: the checkpoint's tensors become its tensors; the rest come from ``build_fresh()``."""
    ties = _tied_names(model)  # assign=True gives every name its own Parameter: re-tie below
    group_of = {name: i for i, names in enumerate(ties) for name in names}
    seen: dict[tuple, Any] = {}
    for key, value in list(sd.items()):
        target = model_state.get(key)
        if target is not None and value.dtype != target.dtype:
            value = sd[key] = value.to(target.dtype)
        # one checkpoint tensor under two untied names (e.g. NLVR's twin cross-attention) must not share memory
        view = (value.data_ptr(), value.shape, value.stride(), value.dtype)
        if value.numel() and seen.setdefault(view, group_of.get(key, key)) != group_of.get(key, key):
            sd[key] = value.clone()
    result = model.load_state_dict(sd, strict=False, assign=True)
    current = dict(_named_tensors(model))
    for names in ties:
        loaded = [n for n in names if not current[n].is_meta]
        if loaded:  # the plain path copies every name into one tensor: the last one loaded wins
            for n in names:
                _set_tensor(model, n, current[loaded[-1]])
    left = [name for name, t in _named_tensors(model) if t.is_meta]
    if left:
        if build_fresh is None:
            raise CheckpointError(
                f"{type(model).__name__} was built on the meta device, but the checkpoint does not cover "
                f"{summarize_keys(left)} and no build_fresh() was given to initialise them"
            )
        fresh = dict(_named_tensors(build_fresh()))  # tied names of the fresh model are one object: ties kept
        for name in left:
            _set_tensor(model, name, fresh[name])
    return result


def resize_to_model(model: nn.Module, key: str, tensor: torch.Tensor, target_shape: torch.Size) -> torch.Tensor | None:
    """``tensor`` resized for ``model``'s ``key`` by the owning module's hook, or None when none can.

    The modules that own ``key``, deepest first (for ``visual_encoder.pos_embed``: ``visual_encoder``,
    then the model), are asked through ``resize_checkpoint_tensor(name, tensor, target_shape)`` with
    ``name`` relative to that module; the first result of exactly ``target_shape`` wins.
    """
    parts = key.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        try:
            owner = model.get_submodule(".".join(parts[:depth]))
        except AttributeError:
            continue
        hook = getattr(owner, "resize_checkpoint_tensor", None)
        if not callable(hook):
            continue
        resized = hook(".".join(parts[depth:]), tensor, target_shape)
        if resized is not None and tuple(resized.shape) == tuple(target_shape):
            return resized
    return None


def _raise_if_unfit(model: nn.Module, label: str, missing: list[str], unexpected: list[str], mismatched: list) -> None:
    if not (missing or unexpected or mismatched):
        return
    lines = [f"Checkpoint {label} does not fit {type(model).__name__} exactly (strict=True):"]
    if missing:
        lines.append(f"  {len(missing)} missing: {summarize_keys(missing)}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected: {summarize_keys(unexpected)}")
    if mismatched:
        lines.append(f"  {len(mismatched)} shape-mismatched (ckpt vs model): " + ", ".join(f"{k} {a} vs {b}" for k, a, b in mismatched[:20]))
    lines.append("Use the checkpoint made for this model type, or pass strict=False to load what fits.")
    raise CheckpointError("\n".join(lines))


def _log(report: LoadReport, model: nn.Module) -> None:
    name = type(model).__name__
    if report.missing:
        logger.warning(
            "%s: %d keys missing from %s (left as initialised): %s", name, len(report.missing), report.source, summarize_keys(report.missing)
        )
    if report.unexpected:
        logger.warning("%s: %d unexpected keys in %s (not used): %s", name, len(report.unexpected), report.source, summarize_keys(report.unexpected))
    if report.mismatched:
        logger.warning(
            "%s: %d keys in %s have another shape than the model (left as initialised): %s",
            name,
            len(report.mismatched),
            report.source,
            ", ".join(f"{k} {a} vs {b}" for k, a, b in report.mismatched),
        )
    for key, old, new in report.interpolated:
        logger.info("%s: interpolated %s from %s to %s", name, key, old, new)
    logger.info("%s", report)


# -- saving -------------------------------------------------------------------------------------
class CheckpointWriteError(CheckpointError, OSError):
    """A checkpoint could not be written (disk full, quota, permissions); the previous file is intact."""


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[Path]:
    """``atomic_write`` whose failures (torch reports a full disk as "unexpected pos ...") name the file."""
    try:
        with atomic_write(path) as tmp:
            yield tmp
    except (OSError, RuntimeError) as e:
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there"
        except OSError:
            free = "free space unknown"
        raise CheckpointWriteError(
            f"Could not write the checkpoint {path} ({type(e).__name__}: {e}; {free}). Nothing was replaced: the previous "
            f"file at that path, if any, is intact. Free disk space or write to another directory."
        ) from e


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a temp file + fsync + ``os.replace``: never a half-written file."""
    path = Path(path)
    with _writing(path) as tmp:
        torch.save(obj, tmp)
    return path


def save_checkpoint(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike, *, format: str | None = None) -> Path:
    """Save weights atomically as the official ``{'model': state_dict}`` .pth or as .safetensors.

    ``format`` is ``"pth"`` or ``"safetensors"``; by default it follows the suffix. Tied tensors are
    stored once in safetensors (the other names are restored on reading).
    """
    path = Path(path)
    sd = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else dict(model_or_state_dict)
    if format is None:
        if path.name.endswith(SAFETENSORS_SUFFIX):
            format = "safetensors"
        elif path.name.endswith(TORCH_SUFFIXES):
            format = "pth"
        else:
            raise CheckpointError(f"Cannot tell the format of {path} from its suffix; name it .safetensors or .pth, or pass format=.")
    if format == "pth":
        return atomic_save({"model": sd}, path)
    if format != "safetensors":
        raise CheckpointError(f"Unknown checkpoint format {format!r} for {path}; use 'pth' or 'safetensors'.")

    from safetensors.torch import save_file

    tensors, aliases = _dedupe_for_safetensors(sd)
    with _writing(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", _ALIASES_META: json.dumps(aliases)})
    return path


def _dedupe_for_safetensors(sd: Mapping[str, torch.Tensor]) -> tuple[StateDict, dict[str, str]]:
    """safetensors refuses tensors sharing memory: keep one name per identical tensor, copy partial views."""
    aliases: dict[str, str] = {}
    for group in tied_groups(sd):
        for alias in group[1:]:
            aliases[alias] = group[0]
    tensors = {k: v.detach() for k, v in sd.items() if k not in aliases}
    by_storage: dict[tuple, list[str]] = defaultdict(list)
    for k, v in tensors.items():
        if v.numel():
            by_storage[(v.device, v.untyped_storage().data_ptr())].append(k)
    overlapping = {k for names in by_storage.values() if len(names) > 1 for k in names}
    for k, v in tensors.items():
        if k in overlapping or not v.is_contiguous():
            tensors[k] = v.contiguous().clone()
    return tensors, aliases
