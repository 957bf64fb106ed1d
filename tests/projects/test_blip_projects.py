"""Every project yaml loads and validates; every run script names a yaml that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from lavislite.common.config import build_run_config
from lavislite.common.errors import RegistryError

REPO = Path(__file__).resolve().parents[2]
YAMLS = sorted((REPO / "projects").rglob("*.yaml"))
SCRIPTS = sorted((REPO / "projects").rglob("run_scripts/**/*.sh"))


def _id(p: Path) -> str:
    return str(p.relative_to(REPO / "projects"))


def test_projects_exist():
    assert len(YAMLS) >= 20 and len(SCRIPTS) >= 20


@pytest.mark.parametrize("path", YAMLS, ids=_id)
def test_yaml_parses_without_hardcoded_devices(path: Path):
    data = yaml.safe_load(path.read_text())
    if "capfilt" in data:  # a CapFilt job (lavislite capfilt), not a training run
        from lavislite.capfilt import load_config

        load_config(path)
        return
    assert set(data) == {"model", "datasets", "run"}, f"{path}: sections {sorted(data)}"
    run = data["run"]
    assert run.get("task"), f"{path}: run.task missing"
    # LAVIS hard-coded these; here the device and distribution are detected (run.device/distributed: auto).
    for key in ("distributed", "device", "world_size", "dist_url"):
        assert key not in run, f"{path}: run.{key} must not be hard-coded"
    assert data["model"].get("arch") and data["model"].get("model_type")
    if run.get("evaluate"):
        assert run.get("test_splits") or run.get("valid_splits")


@pytest.mark.parametrize("path", YAMLS, ids=_id)
def test_yaml_validates(path: Path):
    if "capfilt" in yaml.safe_load(path.read_text()):
        return  # validated by load_config above
    try:
        cfg = build_run_config(path)
    except RegistryError as exc:  # a head or builder that is not written yet
        pytest.skip(f"plugin not registered yet: {str(exc).splitlines()[0][:200]}")
    from lavislite.common.registry import registry

    task_cls = registry.get_task_class(cfg.run.task)
    for key in task_cls.RUN_DEFAULTS:
        assert key in cfg.run
    assert cfg.run.device == "auto" and cfg.run.distributed == "auto"


@pytest.mark.parametrize("script", SCRIPTS, ids=_id)
def test_run_script(script: Path):
    text = script.read_text()
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert text.startswith("#!/usr/bin/env bash")
    assert 'NGPU=${NGPU:-8}' in text
    assert any(f'torchrun --nproc_per_node="$NGPU" -m {m}' in text for m in ("lavislite.train", "lavislite capfilt"))
    assert '"$@"' in text
    cfgs = re.findall(r"--cfg-path\s+(\S+)", text)
    assert len(cfgs) == 1
    assert (REPO / cfgs[0]).is_file(), f"{script}: {cfgs[0]} does not exist"
    assert script.stat().st_mode & 0o111, f"{script} is not executable"


def test_every_yaml_has_a_script():
    named = {re.findall(r"--cfg-path\s+(\S+)", s.read_text())[0] for s in SCRIPTS}
    for path in YAMLS:
        if path.relative_to(REPO).parts[:2] == ("projects", "demo"):
            continue  # the demo's stage yamls are run by `lavislite demo` (projects/demo/run_demo.sh)
        assert str(path.relative_to(REPO)) in named, f"{path} has no run script"
