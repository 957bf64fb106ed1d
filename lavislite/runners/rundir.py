"""The run directory ``<run.output_dir>/<run_name>/<run_id>/``, checked before any training."""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from lavislite.common import dist
from lavislite.common.errors import ConfigError


def new_run_id() -> str:
    """UTC time to the second plus a random suffix: two runs never share a directory (LAVIS: 10 minutes)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


def check_writable(directory: Path, min_free_mb: float) -> None:
    """Create ``directory``, write and delete a probe file, and check the free space."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write_test_{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"run.output_dir: cannot write to {directory} ({exc.strerror or exc}). Set run.output_dir to a writable "
            f"directory (e.g. --options run.output_dir=$HOME/lavislite_runs)"
        ) from exc
    free_mb = shutil.disk_usage(directory).free / 2**20
    if free_mb < min_free_mb:
        raise ConfigError(
            f"run.output_dir: only {free_mb:.0f} MiB free under {directory}, less than run.min_free_space_mb="
            f"{min_free_mb:g}; free some space or point run.output_dir elsewhere"
        )


def prepare_run_dir(run_cfg: Any, resume_from: Path | None = None) -> tuple[Path, str]:
    """Decide, create and check the run directory on rank 0; every rank gets the same answer.

    A resume continues in the checkpoint's own run directory (it holds ``config.yaml``); otherwise a
    fresh ``<output_dir>/<run_name>/<run_id>`` is made. Any failure is raised on every rank, so no rank
    waits for one that gave up.
    """
    answer: tuple[str, str, str | None]
    if dist.is_main_process():
        try:
            if resume_from is not None and (Path(resume_from).parent / "config.yaml").is_file():
                run_dir = Path(resume_from).resolve().parent
                run_id = run_dir.name
            else:
                run_id = new_run_id()
                run_dir = Path(str(run_cfg.output_dir)).expanduser() / str(run_cfg.run_name) / run_id
            check_writable(run_dir, float(run_cfg.get("min_free_space_mb", 100) or 0))
            answer = (str(run_dir), run_id, None)
        except ConfigError as exc:
            answer = ("", "", str(exc))
    else:
        answer = ("", "", None)
    run_dir_s, run_id, error = dist.broadcast_object(answer)
    if error:
        raise ConfigError(error)
    return Path(run_dir_s), run_id
