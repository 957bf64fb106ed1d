"""Inference building blocks without a model: discovery, JSONL resume/crash safety, sharding, merge, shards."""

import json
import os

import numpy as np
import pytest

from lavislite.common.errors import ConfigError, DataError
from lavislite.inference import rank_split
from lavislite.inference.feature_shards import ShardWriter, load_feature_shards, shard_ids
from lavislite.inference.inputs import discover, is_shard_spec, split_inputs
from lavislite.inference.jsonl import JsonlWriter, read_ids, read_records
from lavislite.inference.options import parse_model, parse_overrides
from lavislite.inference.output import format_table


def test_discover_folder_sorted_recursive_and_dedup(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("z.png", "a.jpg", "b/c.JPEG", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    items = discover([str(tmp_path), str(tmp_path / "a.jpg")])
    assert [os.path.relpath(i.id, tmp_path) for i in items] == ["a.jpg", "z.png", os.path.join("b", "c.JPEG")]
    assert all(i.id == i.path for i in items)


def test_discover_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="no such image file or folder: .*missing"):
        discover([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files .* in the folder .*empty"):
        discover([str(tmp_path / "empty")])


def test_shard_specs_are_recognised():
    assert is_shard_spec("data/shard-000.tar") and is_shard_spec("data/{000..009}.tar")
    assert split_inputs(["a.png", "d/{0..3}.tar", "folder"]) == (["a.png", "folder"], ["d/{0..3}.tar"])


def test_jsonl_writer_resumes_and_cuts_a_partial_last_line(tmp_path):
    out = tmp_path / "o.jsonl"
    with JsonlWriter(out) as w:
        w.write([{"id": "a", "v": 1}, {"id": "b", "v": np.float32(2.5)}])
    with out.open("ab") as f:  # what a machine dying inside a write could leave
        f.write(b'{"id": "c", "v"')
    assert read_ids(out) == {"a", "b"}  # readers ignore the tail
    with JsonlWriter(out) as w:  # the writer cuts it before appending
        assert w.done_ids == {"a", "b"}
        w.write([{"id": "c", "v": 3}])
    assert [r["id"] for r in read_records(out)] == ["a", "b", "c"]
    assert all(line.endswith("}") for line in out.read_text().splitlines())
    with JsonlWriter(out, overwrite=True) as w:
        assert w.done_ids == set()
    assert out.read_text() == ""


def test_jsonl_corrupt_middle_line_is_a_clear_error(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(DataError, match=r"o.jsonl, line 2: not valid JSON.*--overwrite"):
        JsonlWriter(out)


def test_shares_cover_every_item_once():
    items = list(range(11))
    shares = [rank_split.Shard(r, 3).take(items) for r in range(3)]
    assert sorted(sum(shares, [])) == items
    assert shares[1] == [1, 4, 7, 10]


def test_merge_orders_dedupes_and_removes_parts(tmp_path):
    out = tmp_path / "res.jsonl"
    out.write_text(json.dumps({"id": "b", "x": "old"}) + "\n")
    rank_split.part_path(out, 0).write_text(json.dumps({"id": "a"}) + "\n" + json.dumps({"id": "b", "x": "new"}) + "\n")
    rank_split.part_path(out, 1).write_text(json.dumps({"id": "c"}) + "\n" + '{"id": "d", "trunc')
    (tmp_path / "res.rankX.jsonl").write_text("unrelated\n")  # not a part file
    assert [p.name for p in rank_split.existing_parts(out)] == ["res.rank0.jsonl", "res.rank1.jsonl"]
    assert rank_split.done_ids(out) == {"a", "b", "c"}
    assert rank_split.merge(out, order=["c", "a", "b"]) == 3
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"id": "c"}, {"id": "a"}, {"id": "b", "x": "old"}]
    assert rank_split.existing_parts(out) == []


@pytest.mark.parametrize("fmt", ["safetensors", "npy"])
def test_feature_shards_roundtrip_and_resume(tmp_path, fmt):
    w = ShardWriter(tmp_path / "f", fmt, shard_size=2, prefix="rank0")
    rows = np.arange(10, dtype=np.float32).reshape(5, 2)
    w.add(["a", "b", "c"], rows[:3])
    assert shard_ids(tmp_path / "f") == {"a", "b"}  # "c" is buffered, not yet committed
    w.add(["d", "e"], rows[3:])
    w.close()
    ids, feats = load_feature_shards(tmp_path / "f")
    assert ids == ["a", "b", "c", "d", "e"] and np.array_equal(feats, rows)
    w2 = ShardWriter(tmp_path / "f", fmt, shard_size=2, prefix="rank0")
    assert w2.seq == 3  # continues numbering, never overwrites a shard
    if fmt == "npy":  # an array whose ids file never got written does not count
        np.save(tmp_path / "f" / "rank1-00000.npy", rows[:1])
        assert shard_ids(tmp_path / "f") == {"a", "b", "c", "d", "e"}


def test_options_parsing():
    assert parse_model("blip_caption:base_coco") == ("blip_caption", "base_coco")
    with pytest.raises(ConfigError, match="NAME:TYPE"):
        parse_model("blip_caption")
    assert parse_overrides(["image_size=224", "med_overrides.vocab_size=90", "preprocess.x=true"]) == {
        "image_size": 224, "model.med_overrides.vocab_size": 90, "preprocess.x": True}
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["image_size"])


def test_format_table_aligns_columns():
    text = format_table([{"id": "a", "score": 0.5, "caption": ["x", "y"]}, {"id": "long-id", "score": 1.0}], ["id", "score", "caption"])
    lines = text.splitlines()
    assert lines[0].split() == ["id", "score", "caption"]
    assert lines[2].split() == ["a", "0.5000", "x", "|", "y"]
    assert lines[3].startswith("long-id  1.0000")


def test_cli_modules_are_light_and_parse():
    import subprocess
    import sys

    code = ("import sys, argparse\n"
            "from lavislite.cli import caption, vqa, match, retrieve, features\n"
            "p = argparse.ArgumentParser(); sub = p.add_subparsers()\n"
            "for m in (caption, vqa, match, retrieve, features): m.register(sub)\n"
            "a = p.parse_args(['retrieve', '--images', 'd', '--query', 'x', '--option', 'image_size=224'])\n"
            "assert a.top_k == 5 and a.model == 'blip_retrieval:coco' and a.option == ['image_size=224']\n"
            "assert 'torch' not in sys.modules, 'a CLI module imported torch at the top'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
