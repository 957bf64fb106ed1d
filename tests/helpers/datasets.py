"""Tiny local data for the dataset tests (helpers; the fixture is registered by conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lavislite.common.registry import registry

N_IMAGES = 6


def dump(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(N_IMAGES):
        arr = rng.integers(0, 255, size=(32, 40, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "images" / f"COCO_val2014_{i:06d}.jpg")
    imgs = [f"images/COCO_val2014_{i:06d}.jpg" for i in range(N_IMAGES)]
    a = root / "ann"
    dump(a / "cap_train.json", [{"image": p, "caption": f"A photo of thing {i}, number {j}!", "image_id": f"img{i}"}
                                for i, p in enumerate(imgs[:4]) for j in range(2)])
    dump(a / "cap_val.json", [{"image": p, "caption": [f"thing {i} caption {j}" for j in range(3)]} for i, p in enumerate(imgs)])
    dump(a / "nocaps_val.json", [{"image": p, "img_id": i} for i, p in enumerate(imgs)])
    dump(a / "vqa_train.json", [
        {"question_id": 1, "question": "What color?", "answer": ["red", "red", "blue", "red"], "image": imgs[0], "dataset": "vqa"},
        {"question_id": 2, "question": "How many?", "answer": ["2"], "image": imgs[1], "dataset": "vqa"},
    ])
    dump(a / "vg_train.json", [{"question_id": 9, "question": "Where?", "answer": "left", "image": imgs[2], "dataset": "vg"}])
    dump(a / "vqa_test.json", [
        {"question_id": 10, "question": "What is it?", "image": imgs[3]},
        {"question_id": 11, "question": "Is it big?", "image": imgs[4], "answer": ["yes", "no"]},
    ])
    dump(a / "answer_list.json", ["red", "blue", "2", "red", "yes"])
    dump(a / "aokvqa_train.json", [{"question_id": "q1", "question": "Why?", "direct_answers": ["a", "a", "b"], "image": imgs[0],
                                    "choices": ["a", "b", "c", "d"], "correct_choice_idx": 0}])
    dump(a / "aokvqa_val.json", [{"question_id": "q2", "question": "Why not?", "direct_answers": ["b"], "image": imgs[1],
                                  "choices": ["a", "b", "c", "d"], "correct_choice_idx": 1}])
    dump(a / "nlvr.json", [
        {"images": [imgs[0], imgs[1]], "sentence": "The left image has a dog.", "label": "True"},
        {"images": [imgs[2], imgs[3]], "sentence": "Both images show cats", "label": "False"},
    ] * 4)
    dump(a / "pretrain.json", [{"image": p, "caption": ["one caption", "another caption"]} for p in imgs[:3]])
    dump(a / "own_caps.json", [{"image": p, "caption": f"own caption {i}", "split": "train" if i < 4 else "val"} for i, p in enumerate(imgs)])
    dump(a / "own_qa.json", [{"image": p, "question": f"question {i}?", "answer": "yes" if i % 2 else ["no", "maybe"],
                              "split": "train" if i < 4 else "test"} for i, p in enumerate(imgs)])
    return root


def config(name: str, root: Path, anns: dict[str, str], *, storage: str | None = None, size: int = 32) -> Any:
    """The builder's default yaml section pointed at local files (unlisted splits switched off)."""
    cls = registry.get_builder_class(name)
    cfg = cls.default_config()
    for split in list(cfg.build_info.get("annotations", {}).keys()):
        cfg.build_info.annotations[split].url = None
    if "answer_list" in cfg.build_info:
        cfg.build_info.answer_list.url = None
    for key, rel in anns.items():
        if key == "answer_list":
            cfg.build_info.answer_list.path = str(root / rel)
        else:
            cfg.build_info.annotations[key].path = str(root / rel)
    if "images" in cfg.build_info:
        cfg.build_info.images.storage = storage if storage is not None else str(root)
    for stage in ("train", "eval"):
        if stage in cfg.vis_processor:
            cfg.vis_processor[stage].image_size = size
    return cfg


def build(name: str, root: Path, anns: dict[str, str], *, cache_dir: Path | None = None, skip: bool = False, **kw: Any) -> dict:
    cls = registry.get_builder_class(name)
    return cls(config(name, root, anns, **kw), cache_dir or root / "cache", skip_bad_samples=skip).build_datasets()
