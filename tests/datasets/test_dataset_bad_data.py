"""Bad annotations and media: errors name file + record + field; skip_bad_samples skips and counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from lavislite.common.errors import DataError, DownloadError
from lavislite.common.registry import registry
from tests.helpers.datasets import build, config, dump


def caption_world(tmp_path: Path, tiny: Path, records: list, raw: bytes | None = None) -> Path:
    """A copy of the tiny images plus a train annotation file with ``records`` (or ``raw`` bytes)."""
    root = tmp_path / "w"
    shutil.copytree(tiny / "images", root / "images")
    path = root / "ann" / "train.json"
    if raw is not None:
        path.parent.mkdir(parents=True)
        path.write_bytes(raw)
    else:
        dump(path, records)
    return root


GOOD = {"image": "images/COCO_val2014_000000.jpg", "caption": "a cat"}


@pytest.mark.parametrize(
    "bad, field, problem",
    [
        ({"image": "images/COCO_val2014_000001.jpg"}, "caption", "is missing"),
        ({"image": 3, "caption": "x"}, "image", "must be a string"),
        ({"image": "images/COCO_val2014_000001.jpg", "caption": "   "}, "caption", "is empty"),
        ({"image": "images/COCO_val2014_000001.jpg", "caption": ["ok", ""]}, "caption", "item 1 is empty"),
        ({"image": "images/COCO_val2014_000001.jpg", "caption": "x", "image_id": True}, "image_id", "must be a string or an int"),
    ],
)
def test_bad_record_names_file_record_field(tmp_path, tiny, bad, field, problem):
    root = caption_world(tmp_path, tiny, [GOOD, GOOD, bad])
    with pytest.raises(DataError) as err:
        build("coco_caption", root, {"train": "ann/train.json"})
    msg = str(err.value)
    assert str(root / "ann/train.json") in msg and "record 2" in msg and f"'{field}'" in msg and problem in msg
    assert "skip_bad_samples" in msg
    ds = build("coco_caption", root, {"train": "ann/train.json"}, skip=True)["train"]
    assert len(ds) == 2 and ds.num_skipped == 1


def test_non_utf8_json(tmp_path, tiny):
    text = json.dumps([GOOD, {"image": "images/COCO_val2014_000001.jpg", "caption": "caf\u00e9 au lait"}, GOOD], ensure_ascii=False)
    raw = text.encode("latin-1")  # é as one byte 0xE9: not UTF-8
    root = caption_world(tmp_path, tiny, [], raw=raw)
    with pytest.raises(DataError, match=r"train\.json: record 1: field 'caption' is not valid UTF-8"):
        build("coco_caption", root, {"train": "ann/train.json"})
    builder = registry.get_builder_class("coco_caption")(config("coco_caption", root, {"train": "ann/train.json"}), tmp_path, skip_bad_samples=True)
    ds = builder.build_datasets()["train"]
    assert len(ds) == 2 and builder.num_skipped == 1


def test_not_json_and_not_a_list(tmp_path, tiny):
    root = caption_world(tmp_path, tiny, [], raw=b"[{\"image\": ")
    with pytest.raises(DataError, match=r"train\.json: not valid JSON"):
        build("coco_caption", root, {"train": "ann/train.json"})
    dump(root / "ann" / "train.json", {"image": "x"})
    with pytest.raises(DataError, match="top level must be a JSON list"):
        build("coco_caption", root, {"train": "ann/train.json"})


def test_missing_and_corrupt_images(tmp_path, tiny):
    recs = [GOOD, {"image": "images/missing.jpg", "caption": "gone"}, {"image": "images/broken.jpg", "caption": "bad"},
            {"image": "images/COCO_val2014_000003.jpg", "caption": "fine"}]
    root = caption_world(tmp_path, tiny, recs)
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ds = build("coco_caption", root, {"train": "ann/train.json"})["train"]
    with pytest.raises(DataError) as err:
        ds[1]
    assert "missing.jpg" in str(err.value) and "train.json, record 1" in str(err.value)
    with pytest.raises(DataError) as err:
        ds[2]
    assert "broken.jpg" in str(err.value) and "record 2" in str(err.value)

    ds = build("coco_caption", root, {"train": "ann/train.json"}, skip=True)["train"]
    assert ds[1]["text_input"] == "a picture of fine"  # the next valid sample, deterministically
    assert ds[2]["text_input"] == "a picture of fine"
    assert ds.num_skipped == 2
    ds[1]
    assert ds.num_skipped == 2  # counted once per bad sample


def test_skips_in_dataloader_workers_are_counted(tmp_path, tiny):
    recs = [GOOD, {"image": "images/missing.jpg", "caption": "gone"}, GOOD, {"image": "images/missing2.jpg", "caption": "gone"}]
    root = caption_world(tmp_path, tiny, recs)
    ds = build("coco_caption", root, {"train": "ann/train.json"}, skip=True)["train"]
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=ds.collater)
    batches = list(loader)
    assert sum(len(b["text_input"]) for b in batches) == 4
    assert ds.num_skipped == 2  # written by the workers, read in the main process


def test_all_bad_raises(tmp_path, tiny):
    root = caption_world(tmp_path, tiny, [{"image": "images/nope.jpg", "caption": "x"}])
    ds = build("coco_caption", root, {"train": "ann/train.json"}, skip=True)["train"]
    with pytest.raises(DataError, match="every one of the 1 samples is bad"):
        ds[0]


def test_vqa_eval_duplicate_question_ids(tmp_path, tiny):
    root = caption_world(tmp_path, tiny, [])
    dump(root / "ann" / "q.json", [{"question_id": 1, "question": "a?", "image": GOOD["image"]}] * 2)
    with pytest.raises(DataError, match=r"q\.json, record 1: field 'question_id' 1 repeats record 0"):
        build("coco_vqa", root, {"test": "ann/q.json"})


def test_bad_answer_list(tmp_path, tiny):
    root = caption_world(tmp_path, tiny, [])
    dump(root / "ann" / "q.json", [{"question_id": 1, "question": "a?", "image": GOOD["image"]}])
    dump(root / "ann" / "al.json", ["yes", 3])
    with pytest.raises(DataError, match=r"al\.json: entry 1 must be a non-empty string"):
        build("coco_vqa", root, {"test": "ann/q.json", "answer_list": "ann/al.json"})


def test_missing_local_annotation_path(tmp_path, tiny):
    with pytest.raises(DataError, match=r"nope\.json \(datasets\.coco_caption\.build_info\.annotations\.train\.path\) not found"):
        build("coco_caption", tiny, {"train": "ann/nope.json"})


def test_offline_url_error_names_url_and_place(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("LAVISLITE_OFFLINE", "1")
    cfg = config("coco_caption", tiny, {})
    cfg.build_info.annotations.val.url = "https://storage.googleapis.com/sfr-vision-language-research/datasets/coco_karpathy_val.json"
    builder = registry.get_builder_class("coco_caption")(cfg, tmp_path)
    with pytest.raises(DownloadError) as err:
        builder.build_datasets()
    msg = str(err.value)
    assert "coco_karpathy_val.json" in msg and "https://storage.googleapis.com" in msg
    assert str(tmp_path / "coco" / "annotations" / "coco_karpathy_val.json") in msg
    assert "datasets.coco_caption.build_info.annotations.val" in msg and ".path" in msg


def test_cached_annotation_is_used_offline(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("LAVISLITE_OFFLINE", "1")
    target = tmp_path / "coco" / "annotations" / "coco_karpathy_val.json"
    target.parent.mkdir(parents=True)
    shutil.copy(tiny / "ann" / "cap_val.json", target)
    cfg = config("coco_caption", tiny, {})
    cfg.build_info.annotations.val.url = "https://storage.googleapis.com/sfr-vision-language-research/datasets/coco_karpathy_val.json"
    cfg.build_info.annotations.val_gt.url = "https://storage.googleapis.com/sfr-vision-language-research/datasets/coco_karpathy_val_gt.json"
    ds = registry.get_builder_class("coco_caption")(cfg, tmp_path).build_datasets()
    assert len(ds["val"]) == 6
    assert Path(ds["val"].gt_file).is_file()  # gt url unreachable: generated from the captions instead
