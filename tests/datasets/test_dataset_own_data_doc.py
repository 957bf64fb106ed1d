"""The worked examples of docs/own_data.md: configs validate and the datasets build (no model weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lavislite.common.config import build_run_config
from lavislite.tasks import setup_task

CAPTIONS = [
    {"image": "images/beach_0001.jpg", "caption": ["a red kite over the beach", "a kite flying by the sea"], "split": "train"},
    {"image": "images/beach_0002.jpg", "caption": "people walking on a sandy beach", "split": "train"},
    {"image": "images/dogs_0003.jpg", "caption": "two dogs asleep on a sofa", "split": "train"},
    {"image": "images/fruit_0101.jpg", "caption": ["a bowl of apples and pears"], "split": "val"},
]
QA = [
    {"image": "images/beach_0001.jpg", "question": "What is flying?", "answer": ["kite", "kite", "a kite"], "split": "train"},
    {"image": "images/dogs_0003.jpg", "question": "How many dogs?", "answer": "2", "split": "train"},
    {"image": "images/fruit_0101.jpg", "question": "What fruit is there?", "answer": ["apples", "pears"], "split": "test"},
]
CAPTION_YAML = """
model: {arch: blip_caption, model_type: base_coco}
datasets:
  image_text:
    build_info:
      annotations:
        train: {path: my_data/captions.json}
        val: {path: my_data/captions.json}
run: {task: captioning, max_epoch: 5, train_splits: [train], valid_splits: [val], output_dir: output/my_caption}
"""
RETRIEVAL_YAML = """
model: {arch: blip_retrieval, model_type: coco}
datasets:
  image_text:
    build_info:
      annotations:
        train: {path: my_data/captions.json}
        val: {path: my_data/captions.json}
    text_processor:
      train: {prompt: ""}
run: {task: retrieval, valid_splits: [val]}
"""
VQA_YAML = """
model: {arch: blip_vqa, model_type: vqav2}
datasets:
  image_qa:
    build_info:
      annotations:
        train: {path: my_data/qa.json}
        test: {path: my_data/qa.json}
run: {task: vqa, test_splits: [test]}
"""


@pytest.fixture
def my_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_data" / "images").mkdir(parents=True)
    for rec in CAPTIONS:
        Image.fromarray(np.full((24, 24, 3), 128, np.uint8)).save(tmp_path / "my_data" / rec["image"])
    (tmp_path / "my_data" / "captions.json").write_text(json.dumps(CAPTIONS))
    (tmp_path / "my_data" / "qa.json").write_text(json.dumps(QA))
    return tmp_path


def _datasets(tmp_path, text, name, options=()):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    cfg = build_run_config(path, [f"datasets.{name}.vis_processor.{s}.image_size=32" for s in ("train", "eval")] + list(options))
    return setup_task(cfg).build_datasets(cfg)[name]


def test_caption_example(my_data):
    ds = _datasets(my_data, CAPTION_YAML, "image_text")
    assert len(ds["train"]) == 4 and len(ds["val"]) == 1
    assert ds["train"][0]["text_input"] == "a picture of a red kite over the beach"
    assert ds["val"].image_ids == [101]
    gt = json.loads(ds["val"].gt_file.read_text())
    assert gt["annotations"] == [{"image_id": 101, "caption": "a bowl of apples and pears", "id": 0}]


def test_retrieval_example(my_data):
    ds = _datasets(my_data, RETRIEVAL_YAML, "image_text")
    b = ds["train"].collater([ds["train"][i] for i in range(4)])
    assert b["text_input"][0] == "a red kite over the beach" and b["image_id"].tolist() == [0, 0, 1, 2]


def test_vqa_example(my_data):
    ds = _datasets(my_data, VQA_YAML, "image_qa")
    b = ds["train"].collater([ds["train"][0], ds["train"][1]])
    assert b["answer"] == ["kite", "a kite", "2"] and b["n_answers"].tolist() == [2, 1]
    assert ds["test"].answer_list == ["kite", "a kite", "2", "apples", "pears"]
    assert ds["test"].gt_answers == {0: ["apples", "pears"]}


def test_storage_option(my_data):
    (my_data / "photos").symlink_to(my_data / "my_data")
    ds = _datasets(my_data, CAPTION_YAML, "image_text", ["datasets.image_text.build_info.images.storage=./photos"])
    assert ds["val"].media_root == my_data / "photos" and ds["val"][0]["image"].shape == (3, 32, 32)
