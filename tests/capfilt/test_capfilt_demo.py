"""`lavislite demo capfilt`: a smoke-size run through every stage (clean split -> captioner and filter ->
CapFilt on the noisy web -> pre-training per arm -> zero-shot evaluation), and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lavislite.cli import build_parser
from lavislite.demo.capfilt_demo import format_table, run_capfilt_demo

SMOKE = {"n_train": 12, "n_test": 6, "n_web": 40, "base_epochs": 1, "finetune_epochs": 1, "arm_iters": 2}


def test_cli_parses_demo_capfilt():
    args = build_parser().parse_args(["demo", "capfilt", "--quick", "--seed", "3"])
    assert (args.which, args.quick, args.seed) == ("capfilt", True, 3)
    assert build_parser().parse_args(["demo"]).which is None


def test_smoke_run_through_every_stage(tmp_path):
    lines: list[str] = []
    result = run_capfilt_demo(tmp_path / "out", quick=True, world_dir=tmp_path / "world", threads=1, sizes=SMOKE,
                              arms=["raw_web", "capfilt", "filter_only"], echo=lines.append)
    data = json.loads((Path(result["out_dir"]) / "capfilt_metrics.json").read_text())
    assert list(data["arms"]) == ["raw_web", "capfilt", "filter_only"]
    assert data["chance"]["t2i_r1"] == pytest.approx(100 / 6)
    raw = data["arms"]["raw_web"]
    assert 0 <= raw["t2i_r1"] <= 100 and 0 <= raw["i2t_r1"] <= 100 and raw["CIDEr"] >= 0
    for arm in ("capfilt", "filter_only"):
        cap = data["capfilt"][arm]
        q = cap["filter_vs_truth"]
        assert q["web_texts"] == 40 and q["noisy"] == 20  # the stated 50% noise rate, exactly
        assert q["removed"] == 40 - cap["summary"]["kept_web"]
        assert cap["summary"]["synthetic_in"] == (40 if arm == "capfilt" else 0)
        # an arm whose filter kept nothing is reported, not trained
        assert (data["arms"][arm] is None) == (cap["summary"]["kept_web"] + cap["summary"]["kept_synthetic"] == 0)
    table = format_table(data)
    assert "chance" in table and "noisy web alt-texts" in table
    assert sum(line.startswith("[4]") for line in lines) == 3
