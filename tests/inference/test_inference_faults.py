"""Inference faults: a full disk while writing ``--output`` (one line, exit 2, nothing lost, the rerun
resumes) and an unreadable image read by DataLoader workers (the same one line as without them)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from lavislite.cli import main
from tests.helpers.inference import write_images

FAST = ["--max-length", "6", "--min-length", "2", "--beams", "1", "--batch-size", "2", "-q"]


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_disk_full_during_caption_output(tmp_path, model_args, capsys, monkeypatch):
    write_images(tmp_path / "imgs", 4)
    out = tmp_path / "caps.jsonl"
    argv = ["caption", str(tmp_path / "imgs"), "-o", str(out), *FAST, *model_args("blip_caption")]
    real_write, calls = os.write, []

    def fill_up(fd, data):
        if bytes(data[:2]) == b'{"':  # a record batch of the JSONL writer
            calls.append(fd)
            if len(calls) > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fill_up)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "No space left on device" in err[0], err
    assert len(_ids(out)) == 2  # the first batch is kept whole
    monkeypatch.setattr(os, "write", real_write)
    assert main(argv) == 0
    assert len(_ids(out)) == 4 and len(set(_ids(out))) == 4  # resumed, nothing twice


def test_unreadable_image_with_workers_is_the_same_line(tmp_path, model_args, capsys):
    write_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    argv = ["caption", str(tmp_path / "imgs"), *FAST, *model_args("blip_caption")]
    errors = []
    for workers in ("0", "2"):
        assert main([*argv, "--num-workers", workers]) == 2
        errors.append([line for line in capsys.readouterr().err.splitlines() if "error:" in line])
    assert len(errors[0]) == 1 and "broken.png" in errors[0][0] and errors[1] == errors[0], errors
