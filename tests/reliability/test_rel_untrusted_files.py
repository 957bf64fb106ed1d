"""Untrusted files never run code: checkpoints (every torch.load is weights_only), resume states, configs, shards.

Each exploit touches a marker file when unpickled/constructed. The tests assert the marker never appears,
and a mutation check per format shows the same file *does* create the marker once the protection is
removed (weights_only=False / yaml.unsafe_load), so the assertions really discriminate.
"""

from __future__ import annotations

import ast
import io
import tarfile
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

import lavislite
from lavislite.common.checkpoint import load_checkpoint, read_state_dict
from lavislite.common.config import load_yaml
from lavislite.common.errors import CheckpointError, ConfigError, DataError
from lavislite.runners import checkpointing

PACKAGE = Path(lavislite.__file__).resolve().parent


class Exploit:
    """Unpickling this calls ``Path.touch(marker)``: any code could run in its place."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def evil_pth(path: Path, marker: Path, *, zip_format: bool = True) -> Path:
    sd = {"w": torch.zeros(2, 2)}
    torch.save({"model": sd, "payload": Exploit(marker)}, path, _use_new_zipfile_serialization=zip_format)
    return path


# -- a static guard: no torch.load without weights_only=True anywhere in the package -----------
def _torch_load_calls() -> list[tuple[Path, ast.Call]]:
    calls = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if name in ("load", "loads") and isinstance(f, ast.Attribute) and getattr(f.value, "id", "") in ("torch", "pickle", "dill", "joblib"):
                    calls.append((path, node))
                if name in ("unsafe_load", "full_load") or (name == "load" and getattr(getattr(f, "value", None), "id", "") == "yaml"):
                    calls.append((path, node))
    return calls


def test_every_torch_load_is_weights_only():
    calls = _torch_load_calls()
    assert calls, "the scan found no torch.load at all: the scanner is broken"
    bad = []
    for path, call in calls:
        mod = getattr(call.func.value, "id", "")
        kw = {k.arg: k.value for k in call.keywords}
        ok = mod == "torch" and isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
        if not ok:
            bad.append(f"{path.relative_to(PACKAGE)}:{call.lineno} {ast.unparse(call)}")
    assert not bad, "unsafe deserialisation calls:\n" + "\n".join(bad)


def test_the_scanner_catches_an_unsafe_call(tmp_path, monkeypatch):
    """Mutation check of the static guard: a file with torch.load(p) (no weights_only) is reported."""
    fake = tmp_path / "pkg"
    fake.mkdir()
    (fake / "m.py").write_text("import torch\nx = torch.load('a.pth', map_location='cpu')\ny = torch.load('b', weights_only=True)\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"m\.py:2 torch\.load\('a\.pth'"):
        test_every_torch_load_is_weights_only()


# -- checkpoints ---------------------------------------------------------------------------------
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_malicious_checkpoint_refused_and_never_run(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    path = evil_pth(tmp_path / "evil.pth", marker, zip_format=zip_format)
    with pytest.raises(CheckpointError, match=r"Refused to load .*evil\.pth.*never unpickles"):
        read_state_dict(path)
    with pytest.raises(CheckpointError):
        load_checkpoint(torch.nn.Linear(2, 2), path)
    assert not marker.exists()
    # mutation check: without weights_only the very same file runs its payload
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_malicious_bin_in_a_transformers_dir_refused(tmp_path):
    marker = tmp_path / "pwned"
    d = tmp_path / "hf"
    d.mkdir()
    evil_pth(d / "pytorch_model.bin", marker)
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        read_state_dict(d)
    assert not marker.exists()


def test_safetensors_preferred_over_pickle_in_a_directory(tmp_path):
    marker = tmp_path / "pwned"
    d = tmp_path / "hf"
    d.mkdir()
    evil_pth(d / "pytorch_model.bin", marker)
    save_file({"w": torch.ones(2)}, str(d / "model.safetensors"))
    assert torch.equal(read_state_dict(d)["w"], torch.ones(2))  # the pickle is never opened
    assert not marker.exists()


def test_malicious_resume_checkpoint_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint_latest.pth"
    torch.save({"model": {}, "progress": {}, "rng": Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="checkpoint_latest.pth"):
        checkpointing.read(path)
    with pytest.raises(CheckpointError):
        checkpointing.load_training_state(path, model=torch.nn.Linear(2, 2), optimizer=None, scheduler=None, scaler=None)
    assert not marker.exists()


def test_training_state_round_trips_under_weights_only(tmp_path):
    """What the runner writes is readable by the weights_only loader (no pickled classes in it)."""
    from lavislite.runners.checkpointing import Progress

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    path = checkpointing.save_training_state(
        tmp_path / "checkpoint_latest.pth", model=model, optimizer=opt, scheduler=sched, scaler=None,
        progress=Progress(), rng=[{"torch": torch.get_rng_state()}],
    )
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["model"]["weight"], model.weight.detach())


# -- configs -------------------------------------------------------------------------------------
def test_yaml_config_with_python_tags_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "project.yaml"
    path.write_text(f"run:\n  x: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    with pytest.raises(ConfigError, match="project.yaml"):
        load_yaml(path)
    assert not marker.exists()
    yaml.unsafe_load(path.read_text())  # mutation check: an unsafe loader runs it
    assert marker.exists()


# -- webdataset shards ---------------------------------------------------------------------------
def test_pickle_members_in_a_shard_are_never_decoded(tmp_path):
    from PIL import Image

    from lavislite.datasets.datasets.pretrain_datasets import WebDatasetPretrain

    marker = tmp_path / "pwned"
    payload = io.BytesIO()
    torch.save(Exploit(marker), payload)
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    shard = tmp_path / "evil.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("s.png", png.getvalue()), ("s.txt", b"a red square"), ("s.pth", payload.getvalue()), ("s.pyd", payload.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    samples = list(WebDatasetPretrain(str(shard)))
    assert [s["text_input"] for s in samples] == ["a red square"]
    assert not marker.exists()
    torch.load(io.BytesIO(payload.getvalue()), weights_only=False)  # mutation check: the member is live
    assert marker.exists()


def test_non_image_bytes_are_a_data_error_not_a_crash(tmp_path):
    from lavislite.processors.image_processors import load_image

    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"#!/bin/sh\ntouch pwned\n")
    with pytest.raises(DataError, match=r"photo\.jpg.*not an image"):
        load_image(fake)
