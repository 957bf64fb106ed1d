"""The BLIP heads. Every module here registers its classes when imported; importing this package
imports them all (new head = new file)."""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
