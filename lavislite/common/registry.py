"""One registry class, one instance per kind of plugin.

Registration is lazy: a lookup that misses imports the kind's home package (for example
``lavislite.models``), whose modules register themselves with decorators, and then the
``lavislite.plugins`` entry-point group of installed third-party packages. So ``import
lavislite`` stays cheap and a user's own module registers by being imported (``run.imports``
in a project yaml, or ``registry.import_modules([...])``).
"""

from __future__ import annotations

import difflib
import importlib
import threading
from typing import Any, Callable, Iterable, TypeVar

from lavislite.common.errors import RegistryError

T = TypeVar("T")

ENTRY_POINT_GROUP = "lavislite.plugins"


class Registry:
    """A name -> object table for one kind of plugin (models, tasks, ...)."""

    def __init__(self, kind: str, home_package: str | None = None) -> None:
        self.kind = kind
        self.home_package = home_package
        self._entries: dict[str, Any] = {}
        self._home_loaded = home_package is None

    def register(self, name: str, obj: Any = None, *, force: bool = False) -> Any:
        """Register ``obj`` under ``name``; usable as ``@reg.register("name")``."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} registry: names must be non-empty strings, got {name!r}")

        def _do(o: T) -> T:
            old = self._entries.get(name)
            if old is not None and old is not o and not force:
                raise RegistryError(
                    f"{self.kind} registry: the name {name!r} is already taken by {_describe(old)}; "
                    f"pick another name or pass force=True to replace it"
                )
            self._entries[name] = o
            return o

        return _do if obj is None else _do(obj)

    def get(self, name: str) -> Any:
        """Return the object registered as ``name``; raise a helpful error if there is none."""
        if name not in self._entries:
            _load_plugins()
            self._load_home()
        if name not in self._entries:
            names = sorted(self._entries)
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RegistryError(
                f"{self.kind} registry has no entry {name!r}.{hint} Registered: {', '.join(names) or '(none)'}. "
                f"A {self.kind} from your own module must be imported first (run.imports in the project "
                f"yaml, or lavislite.registry.import_modules([...]))."
            )
        return self._entries[name]

    def names(self) -> list[str]:
        """All registered names, sorted (loads the home package first)."""
        _load_plugins()
        self._load_home()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except RegistryError:
            return False
        return True

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests and by plugins replacing an entry)."""
        self._entries.pop(name, None)

    def _load_home(self) -> None:
        if self._home_loaded:
            return
        with _LOCK:
            if not self._home_loaded:
                # Set first: the home package's own registrations call back into this registry.
                self._home_loaded = True
                try:
                    importlib.import_module(self.home_package)
                except Exception:
                    self._home_loaded = False
                    raise


def _describe(obj: Any) -> str:
    mod = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None) or type(obj).__name__
    return f"{mod}.{qual}" if mod else qual


_LOCK = threading.RLock()
_plugins_loaded = False


def _load_plugins() -> None:
    """Import every module named in the ``lavislite.plugins`` entry-point group, once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not hide the built-in entries
            import warnings

            warnings.warn(f"lavislite plugin {ep.name!r} ({ep.value}) failed to import: {exc}", stacklevel=2)


class _Registries:
    """The module-level facade: ``registry.register_model("x")``, ``registry.get_task("y")``, ..."""

    def __init__(self) -> None:
        self.models = Registry("model", "lavislite.models")
        self.processors = Registry("processor", "lavislite.processors")
        self.builders = Registry("dataset builder", "lavislite.datasets.builders")
        self.tasks = Registry("task", "lavislite.tasks")
        self.runners = Registry("runner", "lavislite.runners")
        self.lr_schedulers = Registry("lr scheduler", "lavislite.runners.lr_schedulers")
        # Model parts: each model family registers its own (see docs/models.md, "Model parts").
        self.vision_encoders = Registry("vision encoder", "lavislite.models")
        self.tokenizers = Registry("tokenizer", "lavislite.models")
        self.checkpoint_converters = Registry("checkpoint converter", "lavislite.models")
        self._paths: dict[str, Any] = {}

    # Registration decorators, one per kind.
    def register_model(self, name: str, *, force: bool = False) -> Callable[[T], T]:
        return self.models.register(name, force=force)

    def register_processor(self, name: str, *, force: bool = False) -> Callable[[T], T]:
        return self.processors.register(name, force=force)

    def register_builder(self, name: str, *, force: bool = False) -> Callable[[T], T]:
        return self.builders.register(name, force=force)

    def register_task(self, name: str, *, force: bool = False) -> Callable[[T], T]:
        return self.tasks.register(name, force=force)

    def register_runner(self, name: str, *, force: bool = False) -> Callable[[T], T]:
        return self.runners.register(name, force=force)

    def register_lr_scheduler(self, name: str, *, force: bool = False) -> Callable[[T], T]:
        return self.lr_schedulers.register(name, force=force)

    def register_vision_encoder(self, name: str, obj: Any = None, *, force: bool = False) -> Any:
        """A builder ``(model_cfg) -> (module, width)``; a model config selects it by name."""
        return self.vision_encoders.register(name, obj, force=force)

    def register_tokenizer(self, name: str, obj: Any = None, *, force: bool = False) -> Any:
        """A loader ``(source) -> tokenizer`` (source: a hub name or a local path)."""
        return self.tokenizers.register(name, obj, force=force)

    def register_checkpoint_converter(self, name: str, obj: Any = None, *, force: bool = False) -> Any:
        """An object with ``detect(keys) -> bool`` and ``convert(state_dict) -> state_dict`` (a foreign key layout)."""
        return self.checkpoint_converters.register(name, obj, force=force)

    # Lookups.
    def get_model_class(self, name: str) -> Any:
        return self.models.get(name)

    def get_processor_class(self, name: str) -> Any:
        return self.processors.get(name)

    def get_builder_class(self, name: str) -> Any:
        return self.builders.get(name)

    def get_task_class(self, name: str) -> Any:
        return self.tasks.get(name)

    def get_runner_class(self, name: str) -> Any:
        return self.runners.get(name)

    def get_lr_scheduler_class(self, name: str) -> Any:
        return self.lr_schedulers.get(name)

    def get_vision_encoder(self, name: str) -> Any:
        return self.vision_encoders.get(name)

    def get_tokenizer(self, name: str) -> Any:
        return self.tokenizers.get(name)

    def get_checkpoint_converter(self, name: str) -> Any:
        return self.checkpoint_converters.get(name)

    # Listings.
    def list_models(self) -> list[str]:
        return self.models.names()

    def list_processors(self) -> list[str]:
        return self.processors.names()

    def list_builders(self) -> list[str]:
        return self.builders.names()

    def list_tasks(self) -> list[str]:
        return self.tasks.names()

    def list_runners(self) -> list[str]:
        return self.runners.names()

    def list_lr_schedulers(self) -> list[str]:
        return self.lr_schedulers.names()

    def list_vision_encoders(self) -> list[str]:
        return self.vision_encoders.names()

    def list_tokenizers(self) -> list[str]:
        return self.tokenizers.names()

    def list_checkpoint_converters(self) -> list[str]:
        return self.checkpoint_converters.names()

    @staticmethod
    def import_modules(modules: Iterable[str]) -> None:
        """Import user modules so that their ``@registry.register_*`` decorators run."""
        for mod in modules:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as exc:
                raise RegistryError(
                    f"cannot import {mod!r} (listed in run.imports): {exc}. Put the module on PYTHONPATH "
                    f"or install its package."
                ) from exc


registry = _Registries()
