"""CapFilt, BLIP's dataset bootstrapping: a captioner writes synthetic captions for web images, a filter
drops the web and synthetic texts that do not match their image, and the kept pairs are written as
webdataset shards and BLIP json lists for pre-training (docs/capfilt.md).

    from lavislite.capfilt import load_config, run
    result = run(load_config("projects/capfilt/bootstrap.yaml", ["output.dir=out/capfilt"]))

Importing this package is cheap; torch and the models load inside :func:`run`.
"""

from __future__ import annotations

from typing import Any

from lavislite.capfilt.config import CapFiltConfig, ModelSpec, load_config

__all__ = ["CapFiltConfig", "ModelSpec", "load_config", "run"]


def run(cfg: CapFiltConfig | str | dict, options: Any = ()) -> Any:
    """Run CapFilt from a config (or a yaml path / dict plus ``key=value`` options); returns a ``RunResult``."""
    from lavislite.capfilt.pipeline import run as _run

    if not isinstance(cfg, CapFiltConfig):
        cfg = load_config(cfg, list(options))
    return _run(cfg)
