"""Model-type yamls that inherit (``_base_``) resolve to exactly the configs they had before."""

from __future__ import annotations

import json

import pytest

from tests.foundation.snapshot_model_configs import SNAPSHOT, canonical, resolved_model_configs

STORED = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
CURRENT = resolved_model_configs()


@pytest.mark.parametrize("name,model_type", [(n, t) for n, types in sorted(STORED.items()) for t in sorted(types)])
def test_resolved_config_equals_snapshot(name, model_type):
    assert model_type in CURRENT.get(name, {}), f"{name}/{model_type} is in the snapshot but no longer registered"
    # canonical text: a value's type counts too (0 and 0.0 differ)
    assert canonical(CURRENT[name][model_type]) == canonical(STORED[name][model_type])


def test_snapshot_covers_every_blip_model_type():
    from lavislite.api import model_zoo

    blip = {(e.name, e.model_type) for e in model_zoo.entries(builtin_only=True) if e.config.startswith("models/blip/")}
    stored = {(n, t) for n, types in STORED.items() for t in types}
    assert blip - stored == set(), "new BLIP model types: add them with `python tests/foundation/snapshot_model_configs.py`"
