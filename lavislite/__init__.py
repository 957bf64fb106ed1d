"""lavislite: the BLIP family of vision-language models behind one small, fast, tested API.

Importing this package is cheap: models, processors, builders, tasks and runners register
themselves the first time a registry lookup needs them.
"""

from lavislite.common.registry import registry

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "registry",
    "load_model",
    "load_preprocess",
    "load_model_and_preprocess",
    "export_model",
    "model_zoo",
    "evaluate",
]


def __getattr__(name: str):
    # The entry points pull in torch; resolve them on first use so `import lavislite` stays light.
    if name in {"load_model", "load_preprocess", "load_model_and_preprocess", "export_model", "model_zoo"}:
        from lavislite import api

        return getattr(api, name)
    if name == "evaluate":
        from lavislite.runners.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'lavislite' has no attribute {name!r}")
