"""Video builders read the shapes world and users' own videos; bad videos fail naming the file or are
skipped and counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lavislite.common.errors import DataError
from lavislite.common.registry import registry
from lavislite.processors.frame_sampling import sample_frame_indices
from lavislite.processors.video_io import read_frames
from tests.helpers.video import world, write_video


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    return world(tmp_path_factory.mktemp("world"))


def _cfg(name: str, **over):
    cfg = registry.get_builder_class(name).default_config()
    cfg.vis_processor.eval.image_size = 32
    cfg.vis_processor.eval.num_frames = 4
    for key, value in over.items():
        node = cfg
        *head, last = key.split(".")
        for h in head:
            node = node[h]
        node[last] = value
    return cfg


def _build(name: str, skip: bool = False, **over):
    return registry.get_builder_class(name)(_cfg(name, **over), "/nonexistent-cache", skip_bad_samples=skip).build_datasets()


def test_msrvtt_retrieval_reads_blip_jsonl(w):
    ann = Path(w.root) / "annotations" / "msrvtt_test.jsonl"
    ds = _build("msrvtt_retrieval", **{"build_info.annotations.test.path": str(ann), "build_info.videos.storage": str(Path(w.root) / "videos")})[
        "test"
    ]
    records = [json.loads(line) for line in ann.read_text().splitlines()]
    assert len(ds) == len(records) == 6
    assert ds.vid2txt == [[i] for i in range(6)] and ds.txt2vid == list(range(6))  # 1k-A: identity
    assert ds.img2txt == ds.vid2txt and ds.txt2img == ds.txt2vid
    assert ds.text[0] == records[0]["caption"]  # already clean (lower case, < 40 words)
    sample = ds[2]
    assert sample["video_id"] == records[2]["clip_name"] and sample["index"] == 2
    assert sample["video"].shape == (4, 3, 32, 32) and sample["video"].dtype == torch.float32
    # BLIP's uniform frames i * floor(vlen / T), normalised with the CLIP mean/std
    path = Path(w.root) / "videos" / f"{records[2]['clip_name']}.mp4"
    raw = read_frames(path, sample_frame_indices(16, 4, "uniform"), size=32)
    assert torch.allclose(sample["video"], ds.vis_processor.transform(raw))
    batch = ds.collater([ds[0], ds[1]])
    assert batch["video"].shape == (2, 4, 3, 32, 32) and batch["index"].tolist() == [0, 1]


@pytest.mark.parametrize("name", ["msrvtt_qa", "msvd_qa"])
def test_video_qa_builders(w, name):
    ann = Path(w.root) / "annotations"
    ds = _build(
        name,
        **{
            "build_info.annotations.test.path": str(ann / "videoqa_test.json"),
            "build_info.answer_list.path": str(ann / "videoqa_answer_list.json"),
            "build_info.videos.storage": str(Path(w.root) / "videos"),
        },
    )["test"]
    records = json.loads((ann / "videoqa_test.json").read_text())
    assert len(ds) == len(records) == 18
    assert ds.answer_list == json.loads((ann / "videoqa_answer_list.json").read_text())
    assert ds.gt_answers[records[0]["question_id"]] == [records[0]["answer"]]
    s = ds[1]
    assert s["question_id"] == records[1]["question_id"] and s["answers"] == [records[1]["answer"]]
    assert s["video"].shape == (4, 3, 32, 32) and s["text_input"] == records[1]["question"]  # BLIP keeps the "?"


def _own_videos(root: Path) -> Path:
    write_video(root / "clips" / "red.mp4", color=(0, 0, 255))
    write_video(root / "clips" / "green.avi", color=(0, 255, 0))
    (root / "captions.json").write_text(
        json.dumps(
            [
                {"video": "clips/red.mp4", "caption": ["A red square moves right.", "red box"]},
                {"video": "clips/green.avi", "caption": "a green square", "start_time": 0.0, "end_time": 1.0},
            ]
        )
    )
    (root / "questions.json").write_text(
        json.dumps(
            [
                {"question_id": "q1", "question": "What colour is the square?", "answer": "red", "video": "clips/red.mp4"},
                {"question_id": "q2", "question": "What colour is the square?", "answer": ["green", "lime"], "video": "clips/green.avi"},
            ]
        )
    )
    return root


def test_video_text_generic_captions_and_questions(tmp_path):
    root = _own_videos(tmp_path)
    ds = _build("video_text", **{"build_info.annotations.test.path": str(root / "captions.json")})["test"]  # storage null: the json's folder
    assert type(ds).__name__ == "VideoRetrievalEvalDataset"
    assert ds.text == ["a red square moves right", "red box", "a green square"] and ds.vid2txt == [[0, 1], [2]]
    red = ds[0]["video"]
    assert red.shape == (4, 3, 32, 32)
    # the colour survives decoding in RGB order: the moving square is red
    mean = (red * ds.vis_processor._std + ds.vis_processor._mean).amax(dim=(0, 2, 3))
    assert mean[0] > 0.8 and mean[1] < 0.5 and mean[2] < 0.5
    assert ds[1]["video"].shape == (4, 3, 32, 32)  # 1 s window of an 8 fps clip

    built = registry.get_builder_class("video_text")(_cfg("video_text"), "/nonexistent-cache")
    built.config.build_info.annotations = {
        "train": {"url": None, "path": str(root / "captions.json"), "sha256": None},
        "val": {"url": None, "path": str(root / "questions.json"), "sha256": None},
    }
    built.config.vis_processor.train.image_size = 32
    built.config.vis_processor.train.num_frames = 2
    splits = built.build_datasets()
    train, qa = splits["train"], splits["val"]
    assert len(train) == 3  # one sample per caption
    batch = train.collater([train[0], train[1], train[2]])
    assert batch["video"].shape == (3, 2, 3, 32, 32) and batch["video_id"].tolist() == [0, 0, 1]
    assert type(qa).__name__ == "VideoQADataset"
    assert qa.answer_list == ["red", "green", "lime"]  # no answer_list configured: the split's own answers
    assert qa.gt_answers == {"q1": ["red"], "q2": ["green", "lime"]}


def _bad_world(tmp_path: Path, w) -> Path:
    """A copy of the world's retrieval split whose videos 1, 3, 4 are missing, empty and corrupt."""
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(Path(w.root) / "videos", root / "videos")
    (root / "videos" / "shapes_video_0001.mp4").unlink()
    (root / "videos" / "shapes_video_0003.mp4").write_bytes(b"")
    (root / "videos" / "shapes_video_0004.mp4").write_bytes(b"this is not an mp4 file" * 50)
    shutil.copy(Path(w.root) / "annotations" / "msrvtt_test.jsonl", root / "msrvtt_test.jsonl")
    return root


@pytest.mark.parametrize("index,fragment", [(1, "not found"), (3, "empty"), (4, "corrupt")])
def test_bad_videos_name_file_and_record(tmp_path, w, index, fragment):
    root = _bad_world(tmp_path, w)
    ds = _build(
        "msrvtt_retrieval", **{"build_info.annotations.test.path": str(root / "msrvtt_test.jsonl"), "build_info.videos.storage": str(root / "videos")}
    )["test"]
    with pytest.raises(DataError) as err:
        ds[index]
    msg = str(err.value)
    assert f"shapes_video_{index:04d}.mp4" in msg and f"record {index}" in msg and fragment in msg
    assert "skip_bad_samples" in msg


def test_bad_videos_skipped_and_counted_in_workers(tmp_path, w):
    root = _bad_world(tmp_path, w)
    ds = _build(
        "msrvtt_retrieval",
        skip=True,
        **{"build_info.annotations.test.path": str(root / "msrvtt_test.jsonl"), "build_info.videos.storage": str(root / "videos")},
    )["test"]
    loader = DataLoader(ds, batch_size=3, num_workers=1, collate_fn=ds.collater)
    seen = [i for b in loader for i in b["index"].tolist()]
    assert sorted(set(seen)) == [0, 2, 5]  # each bad one replaced by the next good video, never None
    assert ds.num_skipped == 3  # counted in the main process although workers decoded


def test_record_without_video_is_rejected(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"caption": "a red square"}]))
    with pytest.raises(DataError, match=r"a\.json: record 0: field 'video' is missing"):
        _build("video_text", **{"build_info.annotations.test.path": str(tmp_path / "a.json")})
