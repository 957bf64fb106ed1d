"""Small faults a new user hit, each with the behaviour that replaced it: an empty ``datasets:``
section, a resume checkpoint holding pickled code, a video whose tail cannot be decoded."""

from __future__ import annotations

import logging

import pytest
import torch

from lavislite.common.config import build_run_config
from tests.reliability.test_rel_untrusted_files import Exploit


def test_empty_datasets_section_is_accepted(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("model: {arch: blip_caption, model_type: tiny}\ndatasets: {}\nrun: {task: captioning}\n")
    cfg = build_run_config(path, [])
    assert dict(cfg.datasets) == {}
    from lavislite.common.errors import ConfigError
    from lavislite.tasks import setup_task

    with pytest.raises(ConfigError, match=r"datasets: section is empty or missing; name at least one registered dataset builder"):
        setup_task(cfg).build_datasets(cfg)


def test_resume_with_pickled_code_gets_lavislites_refusal(tmp_path):
    from lavislite.common.errors import CheckpointError
    from lavislite.runners import checkpointing

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {}, "progress": {}, "rng": Exploit(marker)}, evil)
    with pytest.raises(CheckpointError) as err:
        checkpointing.read(evil)
    msg = str(err.value)
    assert msg.startswith(f"Refused to load {evil}") and "never unpickles" in msg, msg
    assert "weights_only=False" not in msg and not marker.exists()


def test_video_with_unreadable_tail_warns_naming_file_and_frames(tmp_path, monkeypatch, caplog):
    from lavislite.processors import video_io
    from tests.helpers.video import write_video

    clip = write_video(tmp_path / "clip.mp4", n_frames=16)
    real_init = video_io._OpenCVReader.__init__

    def overcount(self, path, size):
        real_init(self, path, size)
        self.vlen = 40  # the container promises 40 frames; only 16 decode

    monkeypatch.setattr(video_io._OpenCVReader, "__init__", overcount)
    with caplog.at_level(logging.WARNING, logger="lavislite"):
        frames = video_io.read_frames(clip, (8, "uniform"), backend="opencv")
    assert frames.shape[0] == 8
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "clip.mp4" in warnings[0] and "16" in warnings[0] and "40" in warnings[0], warnings


def test_cli_one_line_for_a_disk_full_error_anywhere(monkeypatch, capsys):
    """A full disk met outside the JSONL writer (a checkpoint, a metrics file) is one line, exit 2."""
    import argparse
    import errno

    from lavislite import cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/checkpoint_latest.pth")

    def parser() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog="lavislite")
        p.add_argument("-v", "--verbose", action="store_true")
        p.add_subparsers(dest="command").add_parser("save").set_defaults(func=full)
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    assert cli.main(["save"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lavislite save: error: no space left on device writing /data/run/checkpoint_latest.pth; free some space "
                   "(or point the output elsewhere) and run the command again"], err
