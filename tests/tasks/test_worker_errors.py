"""A bad sample read by a DataLoader worker is reported exactly as without workers: one line naming the
file, the record and the field (not torch's "Caught DataError in DataLoader worker process N" and its
re-printed worker traceback), in evaluation, training and inference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lavislite.cli import main
from lavislite.models.tokenizer import init_tokenizer
from tests.helpers.tasks import tokenizer_dir, write_vqa


@pytest.fixture(scope="module")
def vqa_world(tmp_path_factory) -> Path:
    """A tiny VQA project whose val split holds one corrupt image."""
    root = tmp_path_factory.mktemp("worker_errors")
    vocab = tokenizer_dir(root / "vocab")
    paths = write_vqa(root / "vqa")
    val = json.loads(paths["val"].read_text())
    (root / "vqa" / val[3]["image"]).write_bytes(b"not a jpeg at all")
    ann = {s: {"url": None, "path": str(paths[k])} for s, k in {"train": "val", "val": "val", "test": "val"}.items()}
    cfg = {
        "model": {"arch": "blip_vqa", "model_type": "tiny", "tokenizer": str(vocab), "med_overrides": {"vocab_size": len(init_tokenizer(vocab))}},
        "datasets": {"coco_vqa": {"build_info": {"annotations": ann, "answer_list": {"url": None, "path": str(paths["answer_list"])},
                                                 "images": {"storage": str(root / "vqa")}},
                                  "vis_processor": {"train": {"name": "blip_image_eval", "image_size": 32},
                                                    "eval": {"name": "blip_image_eval", "image_size": 32}}}},
        "run": {"task": "vqa", "num_ans_candidates": 3, "valid_splits": ["val"], "output_dir": str(root / "out"), "device": "cpu",
                "batch_size_train": 2, "batch_size_eval": 2, "max_epoch": 1, "min_free_space_mb": 1, "seed": 0},
    }
    (root / "project.yaml").write_text(json.dumps(cfg))
    return root


def _error_of(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_worker_error_is_the_same_one_line(vqa_world, capsys, command):
    base = [command, "--cfg-path", str(vqa_world / "project.yaml"), "--options"]
    without = _error_of(capsys, [*base, "run.num_workers=0"])
    assert "COCO_val2014" in without and "record" in without, without
    assert _error_of(capsys, [*base, "run.num_workers=2"]) == without


def test_worker_error_from_python_keeps_type_and_message(vqa_world):
    """Outside the CLI too: the DataError a worker raised comes back with its own message."""
    import torch

    from lavislite.common.config import build_run_config
    from lavislite.common.errors import DataError
    from lavislite.tasks import setup_task

    cfg = build_run_config(vqa_world / "project.yaml", [])
    ds = setup_task(cfg).build_datasets(cfg)["coco_vqa"]["val"]
    with pytest.raises(DataError) as direct:
        list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0, collate_fn=ds.collater))
    with pytest.raises(DataError) as worker:
        list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=ds.collater))
    assert str(worker.value) == str(direct.value) and "\n" not in str(worker.value)
    assert "DataLoader worker process" in worker.value.worker_traceback


@pytest.mark.parametrize("kind", ["DataError", "ConfigError", "CheckpointError", "DownloadError"])
def test_every_lavislite_error_survives_torchs_worker_reraise(tmp_path, kind):
    """torch's own re-raise path (ExceptionWrapper), for a 0-frame video read in a worker and the other types."""
    import sys

    from torch._utils import ExceptionWrapper

    from lavislite.common import errors
    from lavislite.processors.video_io import read_frames

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    try:
        if kind == "DataError":
            read_frames(empty, (4, "uniform"))
        raise getattr(errors, kind)(f"{tmp_path}/x.json, record 3: field 'image' is bad")
    except errors.LavisliteError as exc:
        original = str(exc)
        wrapper = ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 1")
    with pytest.raises(getattr(errors, kind)) as err:
        wrapper.reraise()
    assert str(err.value) == original and "\n" not in original
    if kind == "DataError":
        assert "empty.mp4" in original
