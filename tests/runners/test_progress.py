"""Progress: tqdm bars on a terminal, periodic log lines elsewhere, nothing under --quiet; training and
evaluation of a run both report."""

from __future__ import annotations

import logging
import sys

import pytest

from lavislite.common import logging as run_logging
from lavislite.common.logging import (
    PROGRESS_LOGGER,
    configure_progress,
    progress,
    progress_line,
)
from tests.helpers.runners import project


@pytest.fixture
def every_item(monkeypatch):
    """A progress line per item (interval 0), restored afterwards."""
    monkeypatch.setattr(run_logging, "_settings", run_logging._ProgressSettings(every_s=0.0))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == PROGRESS_LOGGER]


def test_line_format():
    assert progress_line("eval test", 12, 40, 6.0) == "eval test: 12/40 (30%) 2.00 it/s, 0:06 elapsed, ETA 0:14"
    assert progress_line("encode", 5, None, 3725.0) == "encode: 5 0.00 it/s, 1:02:05 elapsed"


def test_lines_when_stderr_is_not_a_terminal(every_item, caplog):
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        assert list(progress(range(3), desc="work")) == [0, 1, 2]
    lines = _lines(caplog)
    assert len(lines) == 3 and lines[-1].startswith("work: 3/3 (100%) ") and "it/s" in lines[-1]


def test_interval_is_shared_across_loops(monkeypatch, caplog):
    monkeypatch.setattr(run_logging, "_settings", run_logging._ProgressSettings(every_s=3600.0))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        for _ in range(3):  # short loops in a row: one line in the first, then the interval holds
            list(progress(range(5), desc="epoch"))
    assert len(_lines(caplog)) == 1


def test_quiet_and_other_ranks_are_silent(every_item, caplog):
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        list(progress(range(3), desc="rank 1", enabled=False))
        configure_progress(quiet=True)
        list(progress(range(3), desc="quiet"))
    assert _lines(caplog) == []


def test_terminal_gets_a_tqdm_bar(monkeypatch, capsys):
    monkeypatch.setattr(run_logging, "_settings", run_logging._ProgressSettings())
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert list(progress(range(2), desc="bar")) == [0, 1]
    err = capsys.readouterr().err
    assert "bar:   0%|" in err and "0/2" in err and "it/s" in err  # the bar (leave=False: cleared when done)


@pytest.mark.parametrize("quiet", [False, True])
def test_training_and_evaluation_report_progress(tmp_path, every_item, caplog, quiet):
    from lavislite.train import run

    configure_progress(quiet=quiet)
    with caplog.at_level(logging.INFO, logger="lavislite"):
        run(str(project(tmp_path, max_epoch=1)))
    lines = _lines(caplog)
    if quiet:
        assert lines == []
    else:
        assert any(line.startswith("train epoch 0: ") and "ETA" in line for line in lines), lines
        assert any(line.startswith("eval val: ") for line in lines) and any(line.startswith("eval test: ") for line in lines), lines
