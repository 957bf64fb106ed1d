"""Issue 15 item 1: a trained run is a model folder. Tiny demo-world runs (one epoch on 16 images) are
used by every CLI command with ``--model <run directory>`` and no other option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lavislite.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{stage: run directory}`` of the demo's caption, retrieval and VQA projects, trained for one short epoch."""
    import torch

    from lavislite.demo.run import PROJECT_DIR, STAGES
    from lavislite.demo.world import all_texts, generate_world
    from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer
    from lavislite.train import run as run_project

    root = tmp_path_factory.mktemp("run_folders")
    world = generate_world(root / "world", n_train=16, n_val=2, n_test=2, n_videos=2, num_frames=4)
    build_wordpiece_vocab(all_texts(world), 200, root / "tokenizer")
    vocab = len(init_tokenizer(root / "tokenizer"))
    common = [f"model.tokenizer={root / 'tokenizer'}", f"model.med_overrides.vocab_size={vocab}", f"run.output_dir={root / 'runs'}",
              "run.num_workers=0", "run.max_epoch=1", "run.batch_size_train=16", "run.warmup_steps=1", "run.test_splits=[]"]
    stages = {s.name: s for s in STAGES}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for name in ("caption", "retrieval", "vqa"):
            stage = stages[name]
            summary = run_project(str(PROJECT_DIR / stage.yaml), [*common, *stage.data(world), f"run.run_name={name}"])
            out[name] = Path(summary["run_dir"])
            assert summary["model_dir"] == str(out[name] / "model")
    finally:
        torch.set_num_threads(threads)
    images = [p for p in world.images if "_test_" in p.name]
    return out, images


def _jsonl(capsys) -> list[dict]:
    text = capsys.readouterr().out
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_run_writes_a_model_folder(runs):
    run_dirs, _ = runs
    for run_dir in run_dirs.values():
        folder = run_dir / "model"
        assert {p.name for p in folder.iterdir()} == {"lavislite_model.yaml", "model.safetensors", "tokenizer"}
        assert (folder / "tokenizer" / "vocab.txt").is_file()


def test_caption_by_run_folder_matches_python(runs, capsys):
    import lavislite

    run_dirs, images = runs
    assert main(["caption", str(images[0]), str(images[1]), "--model", str(run_dirs["caption"]), "--beams", "2",
                 "--max-length", "12", "--min-length", "3", "--quiet"]) == 0
    rows = {r["id"]: r["caption"] for r in _jsonl(capsys)}
    assert len(rows) == 2
    model, vis, _ = lavislite.load_model_and_preprocess(run_dirs["caption"] / "model")
    import torch

    batch = torch.stack([vis["eval"](str(p)) for p in images[:2]])
    expected = model.generate({"image": batch}, num_beams=2, max_length=12, min_length=3)
    assert [rows[str(p)] for p in images[:2]] == expected


def test_vqa_by_run_folder(runs, capsys):
    run_dirs, images = runs
    assert main(["vqa", str(images[0]), "what shape is on the left?", "--model", str(run_dirs["vqa"]), "--quiet"]) == 0
    rows = _jsonl(capsys)
    assert len(rows) == 1 and isinstance(rows[0]["answer"], str)
    # a folder whose head cannot do the command: one line naming the folder and its head
    assert main(["caption", str(images[0]), "--model", str(run_dirs["vqa"]), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot caption" in err and str(run_dirs["vqa"]) in err and "blip_vqa" in err and len(err.strip().splitlines()) == 1


def test_match_retrieve_features_by_retrieval_run(runs, capsys):
    run_dirs, images = runs
    model = str(run_dirs["retrieval"])
    assert main(["match", str(images[0]), "a red circle on the left", "--model", model, "--quiet"]) == 0
    (row,) = _jsonl(capsys)
    assert 0.0 <= row["itm"] <= 1.0 and -1.0 <= row["itc"] <= 1.0
    assert main(["retrieve", "--images", str(images[0].parent), "--query", "a red circle", "--top-k", "2", "--model", model, "--quiet"]) == 0
    assert len(_jsonl(capsys)) == 2
    assert main(["features", str(images[0]), "--model", model, "--quiet"]) == 0
    (row,) = _jsonl(capsys)
    assert len(row["feature"]) == 64  # the demo retrieval model's ITC projection size (embed_dim)


def test_the_demo_commands_run_as_printed(runs, capsys):
    """``ready_commands`` (what ``lavislite demo`` prints) pasted as they are, on runs like the demo's."""
    import shlex
    import subprocess
    import sys

    from lavislite.demo.run import ready_commands

    run_dirs, images = runs
    commands = ready_commands({k: str(v) for k, v in run_dirs.items()}, images[0])
    assert [c.split()[1] for c in commands] == ["caption", "vqa", "retrieve", "match", "features", "-c"]
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "lavislite":
            assert main([*argv[1:], "--quiet"]) == 0, command
            assert capsys.readouterr().out.strip(), command
        else:  # the Python one-liner, in a fresh interpreter
            done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-2000:]
            assert "BlipCaption" in done.stdout
