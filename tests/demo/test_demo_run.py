"""`lavislite demo --quick` end to end (the CI test): every stage runs through the real runner, losses
fall, retrieval, VQA and zero-shot video retrieval beat chance, and the metrics JSON, loss curves and gallery PNGs are written."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from lavislite.demo.gallery import train_records
from lavislite.demo.run import PROGRESS_EVERY_S, STAGES, run_demo


class Printed(list):
    """The demo's printed lines; ``at[i]``: seconds from the start of ``run_demo`` to line ``i``."""

    def __init__(self) -> None:
        super().__init__()
        self.start = time.monotonic()
        self.at: list[float] = []

    def __call__(self, line: str) -> None:
        self.append(line)
        self.at.append(time.monotonic() - self.start)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    lines = Printed()
    result = run_demo(
        root / "out", quick=True, world_dir=root / "world", threads=1, echo=lines
    )  # tiny models: 1 thread is as fast and immune to a busy CI
    return result, lines


def test_every_stage_ran_and_wrote_its_run(quick):
    result, lines = quick
    assert list(result.run_dirs) == [s.name for s in STAGES]
    for stage, run_dir in result.run_dirs.items():
        assert (Path(run_dir) / "config.yaml").is_file(), stage
        assert (Path(run_dir) / "summary.json").is_file(), stage
        if stage != "pretrain":  # pre-training has no test split
            assert result.metrics[stage], f"{stage}: no test metrics"
    # one progress line per stage, then the table with chance beside every metric
    assert sum(line.startswith("[") for line in lines) == len(STAGES) + 2
    text = "\n".join(lines)
    assert "chance" in text and "text->image R@1" in text and "CIDEr" in text


@pytest.mark.skipif(sys.stderr.isatty(), reason="on a terminal the demo shows tqdm bars instead of progress lines")
def test_progress_within_10_s_and_in_every_stage(quick):
    result, lines = quick
    assert lines.at[0] < 10 and lines.at[1] < 10, lines[:2]
    starts = [i for i, line in enumerate(lines) if line.startswith("[")]
    for a, b in zip(starts[2:], starts[3:] + [len(lines)]):  # the stages after world and vocabulary
        stage = lines[a:b]
        took = lines.at[b - 1] - lines.at[a]
        rated = [line for line in stage if " it/s, " in line and "elapsed" in line]
        if took > 2 * PROGRESS_EVERY_S:
            assert rated, f"{lines[a]} took {took:.0f} s without a progress line: {stage}"
    assert sum(" it/s, " in line for line in lines) >= len(STAGES)


def test_metrics_json(quick):
    result, _ = quick
    data = json.loads((result.out_dir / "demo_metrics.json").read_text())
    keys = {row["key"] for row in data["table"]}
    assert {"retrieval.img_r1", "caption.CIDEr", "vqa.overall", "nlvr.acc", "video_retrieval.vid_r1", "video_qa.accuracy"} <= keys
    for row in data["table"]:
        assert row["chance"] is not None and 0 <= row["chance"], row
    assert data["world"]["counts"]["images_test"] == 16
    assert (result.out_dir / "tokenizer" / "vocab.txt").is_file()


def _losses(run_dir: str, key: str = "loss") -> list[float]:
    return [r[key] for r in train_records(Path(run_dir) / "metrics.jsonl") if key in r]


def test_losses_fall(quick):
    result, _ = quick
    for stage in ("pretrain", "caption", "vqa"):
        losses = _losses(result.run_dirs[stage])
        assert len(losses) >= 4, stage
        first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
        assert last < 0.9 * first, f"{stage}: loss {first:.3f} -> {last:.3f}"
    lm = _losses(result.run_dirs["pretrain"], "loss_lm")
    assert lm[-1] < 0.8 * lm[0]


def test_learning_beats_chance(quick):
    """Held-out retrieval, VQA and zero-shot video retrieval at least twice chance; ITC learnt (not the prior)."""
    result, _ = quick
    rows = {r["key"]: r for r in result.table}
    for key in ("retrieval.img_r1", "vqa.overall", "video_retrieval.vid_r1"):
        assert rows[key]["value"] >= 2 * rows[key]["chance"], rows[key]
    itc = _losses(result.run_dirs["pretrain"], "loss_itc")
    assert itc[-1] < 0.5 * itc[0], itc  # in-batch ITC starts at ln(batch) = 3.47


def test_pictures_are_valid_pngs(quick):
    result, _ = quick
    assert {"loss_curves", "gallery", "retrieval", "metrics"} <= set(result.files)
    for name, path in result.files.items():
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) > 100, name


def test_ready_commands_are_printed_and_run(quick, capsys):
    """Every trained stage is a model folder; the printed caption command runs as pasted (issue 15)."""
    import shlex

    from lavislite.cli import main

    result, lines = quick
    for stage in ("pretrain", "caption", "retrieval", "vqa", "nlvr"):
        assert (Path(result.run_dirs[stage]) / "model" / "lavislite_model.yaml").is_file(), stage
    printed = [line.strip() for line in lines]
    assert len(result.commands) >= 5 and all(c in printed for c in result.commands)
    caption = next(c for c in result.commands if c.startswith("lavislite caption "))
    assert caption.endswith(f"--model {shlex.quote(result.run_dirs['caption'])}")
    assert main([*shlex.split(caption)[1:], "--quiet"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(rows) == 1 and isinstance(rows[0]["caption"], str)
