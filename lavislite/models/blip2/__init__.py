"""The BLIP-2 family: frozen image encoders (EVA-CLIP ViT-g, CLIP ViT-L), the Q-Former on MED, and its heads.
Every module here registers its classes when imported; importing this package imports them all."""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
