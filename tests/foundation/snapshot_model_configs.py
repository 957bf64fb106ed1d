"""Write (or check) the snapshot of every built-in model type's fully resolved config.

``tests/foundation/data/resolved_model_configs.json`` holds, for every BLIP model type of lavislite
(the yamls under ``lavislite/configs/models/blip/``), the ``model`` and ``preprocess`` sections that
:func:`lavislite.common.config.model_type_config` returns (no overrides), as plain containers.
``test_config_inheritance.py`` compares every model type against it, so a change to how yamls are
written (``_base_`` inheritance) cannot change what any model type resolves to.

The snapshot was first written before the variant yamls were reduced to their differences (each yaml
then restated the whole schema). Regenerate it only for an intended change of a model type's values:

    python tests/foundation/snapshot_model_configs.py          # rewrite the file
    python tests/foundation/snapshot_model_configs.py --check  # exit 1 if anything differs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).resolve().parent / "data" / "resolved_model_configs.json"
FAMILY_DIR = "models/blip/"  # the yamls this snapshot guards (relative to lavislite/configs)


def resolved_model_configs() -> dict[str, dict[str, dict]]:
    """``{name: {model_type: {"model": ..., "preprocess": ...}}}`` for every built-in BLIP model type."""
    from omegaconf import OmegaConf

    from lavislite.api import model_zoo
    from lavislite.common.config import model_type_config
    from lavislite.common.registry import registry

    out: dict[str, dict[str, dict]] = {}
    for entry in model_zoo.entries(builtin_only=True):
        if not entry.config.startswith(FAMILY_DIR):
            continue
        cfg = model_type_config(registry.get_model_class(entry.name), entry.model_type, {})
        out.setdefault(entry.name, {})[entry.model_type] = {
            section: OmegaConf.to_container(cfg.get(section), resolve=False) for section in ("model", "preprocess")
        }
    return out


def canonical(configs: dict) -> str:
    """Text that differs whenever a key, a value or a value's type (``0`` vs ``0.0``) differs."""
    return json.dumps(configs, indent=1, sort_keys=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored snapshot instead of writing it")
    args = parser.parse_args()
    current = resolved_model_configs()
    if args.check:
        stored = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
        if canonical(stored) != canonical(current):
            print(f"resolved model configs differ from {SNAPSHOT}", file=sys.stderr)
            return 1
        print(f"{sum(len(t) for t in current.values())} model types match {SNAPSHOT}")
        return 0
    SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
    SNAPSHOT.write_text(canonical(current) + "\n", encoding="utf-8")
    print(f"wrote {sum(len(t) for t in current.values())} model types to {SNAPSHOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
