"""lavislite.common.utils: the one device rule and the one atomic writer of the package."""

from __future__ import annotations

import json

import pytest
import torch

from lavislite.common.errors import ConfigError
from lavislite.common.utils import atomic_write, device_of, resolve_device, write_json


def test_resolve_device_follows_local_rank(monkeypatch):
    """Under torchrun every process takes its own GPU, also before the process group exists."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device(None) == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"--device='cuda' but CUDA is not available"):
        resolve_device("cuda", what="--device")
    with pytest.raises(ConfigError, match=r"run.device='gpu7' is not a device"):
        resolve_device("gpu7")


def test_device_of():
    assert device_of(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert device_of(torch.nn.Identity()) == torch.device("cpu")


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = write_json(tmp_path / "sub" / "out.json", {"a": torch.tensor([1, 2]), "b": torch.tensor(3.5)})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 3.5}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"c": 1})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 3.5}  # the old file is intact
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temp file left behind


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "f.txt"
    with atomic_write(path) as tmp:
        tmp.write_text("one")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as tmp:
            tmp.write_text("two")
            raise RuntimeError("interrupted")
    assert path.read_text() == "one" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
