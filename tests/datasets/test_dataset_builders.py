"""Every builder from its yaml on tiny local files: samples and collated batches (the batch keys docs/datasets.md lists)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lavislite.common.config import CONFIG_ROOT, build_run_config
from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.datasets.builders.base_builder import resolve_storage
from tests.helpers.datasets import N_IMAGES, build, config

BUILDERS = [
    "coco_caption", "coco_retrieval", "flickr30k", "nocaps", "coco_vqa", "vg_vqa", "ok_vqa", "aok_vqa",
    "nlvr", "pretrain_json", "pretrain_wds", "image_text", "image_qa",
]
BASE = "https://storage.googleapis.com/sfr-vision-language-research/datasets/"


def batch_of(ds, n=2):
    return ds.collater([ds[i] for i in range(n)])


def test_every_builder_registered_with_a_yaml():
    names = registry.list_builders()
    for name in BUILDERS:
        assert name in names
        cls = registry.get_builder_class(name)
        path = cls.default_config_path()
        assert path.is_file() and CONFIG_ROOT in path.parents
        cfg = cls.default_config()
        assert "build_info" in cfg
        text = path.read_text()
        assert "/export/" not in text and "/home/" not in text  # no one's machine paths in defaults
    with pytest.raises(ConfigError, match="default"):
        registry.get_builder_class("coco_caption").default_config_path("nope")


def test_official_urls_in_yamls():
    cap = registry.get_builder_class("coco_caption").default_config()
    assert cap.build_info.annotations.train.url == BASE + "coco_karpathy_train.json"
    assert cap.build_info.annotations.test_gt.url == BASE + "coco_karpathy_test_gt.json"
    assert cap.build_info.images.storage == "coco/images"
    assert cap.text_processor.train.prompt == "a picture of "
    vqa = registry.get_builder_class("coco_vqa").default_config()
    assert list(vqa.build_info.annotations.train.url) == [BASE + "vqa_train.json", BASE + "vqa_val.json"]
    assert vqa.build_info.answer_list.url == BASE + "answer_list.json"
    assert vqa.vis_processor.train.image_size == 480
    nlvr = registry.get_builder_class("nlvr").default_config()
    assert nlvr.build_info.annotations.test.url == BASE + "nlvr_test.json"  # not dev (LAVIS bug 15)
    assert nlvr.text_processor.eval.max_words == 40
    assert registry.get_builder_class("vg_vqa").default_config().build_info.annotations.train.url == BASE + "vg_qa.json"
    assert registry.get_builder_class("flickr30k").default_config().build_info.annotations.val.url == BASE + "flickr30k_val.json"
    assert registry.get_builder_class("nocaps").default_config().build_info.annotations.test.url == BASE + "nocaps_test.json"


def test_caption(tiny):
    ds = build("coco_caption", tiny, {"train": "ann/cap_train.json", "val": "ann/cap_val.json"})
    assert set(ds) == {"train", "val"}
    tr = ds["train"]
    assert len(tr) == 8
    b = batch_of(tr, 3)
    assert b["image"].shape == (3, 3, 32, 32) and b["image"].dtype == torch.float32
    assert b["text_input"][0] == "a picture of a photo of thing 0, number 0"
    assert b["image_id"] == [0, 0, 1] and len(set(b["instance_id"])) == 3
    va = ds["val"]
    assert len(va) == N_IMAGES
    b = batch_of(va)
    assert set(b) >= {"image", "image_id", "instance_id"} and b["image_id"] == [0, 1]
    gt = json.loads(Path(va.gt_file).read_text())
    assert [im["id"] for im in gt["images"]] == list(range(N_IMAGES))
    assert len(gt["annotations"]) == 3 * N_IMAGES and gt["annotations"][0] == {"image_id": 0, "caption": "thing 0 caption 0", "id": 0}
    assert (tiny / "cache") in Path(va.gt_file).parents
    assert va.gt_file == va.gt_file  # generated once


def test_caption_configured_gt_file(tiny, tmp_path):
    gt = tmp_path / "val_gt.json"
    gt.write_text(json.dumps({"images": [], "annotations": []}))
    cfg = config("coco_caption", tiny, {"val": "ann/cap_val.json"})
    cfg.build_info.annotations.val_gt.path = str(gt)
    ds = registry.get_builder_class("coco_caption")(cfg, tmp_path).build_datasets()
    assert ds["val"].gt_file == gt


def test_nocaps(tiny):
    ds = build("nocaps", tiny, {"val": "ann/nocaps_val.json"})
    b = batch_of(ds["val"])
    assert b["image_id"] == [0, 1] and b["image"].shape[0] == 2
    assert ds["val"].gt_file is None


@pytest.mark.parametrize("name", ["coco_retrieval", "flickr30k"])
def test_retrieval(tiny, name):
    ds = build(name, tiny, {"train": "ann/cap_train.json", "test": "ann/cap_val.json"})
    b = batch_of(ds["train"], 4)
    assert b["image_id"].dtype == torch.long and b["image_id"].tolist() == [0, 0, 1, 1]
    assert b["text_input"][0] == "a photo of thing 0, number 0"  # no prompt for retrieval
    te = ds["test"]
    assert te.img2txt == [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(N_IMAGES)]
    assert te.txt2img == [i for i in range(N_IMAGES) for _ in range(3)]
    assert len(te.text) == 3 * N_IMAGES and te.text[0] == "thing 0 caption 0"
    b = batch_of(te)
    assert b["index"].tolist() == [0, 1] and b["image"].shape == (2, 3, 32, 32)


def test_vqa_builders(tiny):
    ds = build("coco_vqa", tiny, {"train": "ann/vqa_train.json", "test": "ann/vqa_test.json", "answer_list": "ann/answer_list.json"})
    b = batch_of(ds["train"])
    assert b["answer"] == ["red", "blue", "2"]
    assert b["weight"].dtype == torch.float32 and torch.allclose(b["weight"], torch.tensor([0.75, 0.25, 1.0]))
    assert b["n_answers"].tolist() == [2, 1] and b["question_id"] == [1, 2]
    assert b["text_input"] == ["what color?", "how many?"]
    te = ds["test"]
    assert te.answer_list == ["red", "blue", "2", "yes"]  # duplicate removed, order kept
    assert te.gt_answers == {11: ["yes", "no"]}
    b = batch_of(te)
    assert b["question_id"] == [10, 11] and b["answers"] == [[], ["yes", "no"]] and b["image"].shape == (2, 3, 32, 32)

    vg = build("vg_vqa", tiny, {"train": "ann/vg_train.json"})["train"]
    b = vg.collater([vg[0]])
    assert b["answer"] == ["left"] and b["weight"].tolist() == pytest.approx([0.2])

    ok = build("ok_vqa", tiny, {"train": "ann/vqa_train.json", "test": "ann/vqa_test.json", "answer_list": "ann/answer_list.json"})
    assert set(ok) == {"train", "test"}


def test_aok_vqa(tiny):
    ds = build("aok_vqa", tiny, {"train": "ann/aokvqa_train.json", "val": "ann/aokvqa_val.json", "answer_list": "ann/answer_list.json"})
    b = ds["train"].collater([ds["train"][0]])
    assert b["answer"] == ["a", "b"] and b["weight"].tolist() == pytest.approx([2 / 3, 1 / 3])
    b = ds["val"].collater([ds["val"][0]])
    assert b["question_id"] == ["q2"] and b["answers"] == [["b"]] and b["correct_choice_idx"] == [1] and b["choices"][0][1] == "b"


def test_nlvr_batch(tiny):
    ds = build("nlvr", tiny, {"train": "ann/nlvr.json", "val": "ann/nlvr.json", "test": "ann/nlvr.json"})
    b = batch_of(ds["test"])
    assert b["image0"].shape == b["image1"].shape == (2, 3, 32, 32)
    assert b["label"].dtype == torch.long and b["label"].tolist() == [1, 0]


def test_pretrain_json(tiny):
    ds = build("pretrain_json", tiny, {"train": "ann/pretrain.json"})
    tr = ds["train"]
    assert len(tr) == 6  # 3 images x 2 captions
    b = batch_of(tr)
    assert b["text_input"] == ["one caption", "another caption"] and b["image"].shape == (2, 3, 32, 32)


def test_generic_image_text_and_qa(tiny):
    ds = build("image_text", tiny, {"train": "ann/own_caps.json", "val": "ann/own_caps.json"})
    assert len(ds["train"]) == 4 and len(ds["val"]) == 2  # the "split" field picks the records
    b = batch_of(ds["train"])
    assert b["text_input"][0] == "a picture of own caption 0" and b["image_id"].tolist() == [0, 1]
    assert ds["val"].image_ids == [4, 5] and ds["val"].img2txt == [[0], [1]] and Path(ds["val"].gt_file).is_file()

    qa = build("image_qa", tiny, {"train": "ann/own_qa.json", "test": "ann/own_qa.json"})
    b = batch_of(qa["train"])
    assert b["answer"] == ["no", "maybe", "yes"] and b["n_answers"].tolist() == [2, 1]
    te = qa["test"]
    assert te.answer_list == ["no", "maybe", "yes"]  # every distinct answer of the configured splits
    assert te.collater([te[0]])["question_id"] == [0]


def test_storage_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    assert resolve_storage("coco/images", cache) == cache / "coco/images"
    assert resolve_storage("./data/imgs", cache) == tmp_path / "data/imgs"
    assert resolve_storage("/abs/x", cache) == Path("/abs/x")


def test_missing_storage_folder_is_explained(tiny, tmp_path):
    with pytest.raises(DataError, match=r"storage=.*--options datasets\.coco_caption\.build_info\.images\.storage="):
        build("coco_caption", tiny, {"val": "ann/cap_val.json"}, storage="coco/images", cache_dir=tmp_path)


def test_relative_storage_under_cache(tiny, tmp_path):
    (tmp_path / "mycoco").symlink_to(tiny)
    ds = build("coco_caption", tiny, {"val": "ann/cap_val.json"}, storage="mycoco", cache_dir=tmp_path)
    assert ds["val"].media_root == tmp_path / "mycoco" and ds["val"][0]["image"].shape == (3, 32, 32)


def test_run_config_schema_and_options(tiny, tmp_path):
    project = tmp_path / "p.yaml"
    project.write_text(
        "datasets:\n  image_text:\n    build_info:\n      annotations:\n        train:\n"
        f"          path: {tiny / 'ann/own_caps.json'}\n      images:\n        storage: {tiny}\n"
    )
    cfg = build_run_config(project, [f"datasets.coco_caption.build_info.images.storage={tiny}"])
    assert cfg.datasets.coco_caption.build_info.images.storage == str(tiny)
    assert cfg.datasets.image_text.build_info.annotations.train.path == str(tiny / "ann/own_caps.json")
    with pytest.raises(ConfigError, match="storge"):
        build_run_config(project, ["datasets.image_text.build_info.images.storge=/x"])


def test_task_style_construction_counts_skips(tiny):
    from lavislite.tasks.base_task import BaseTask

    cfg = OmegaConf.create({"run": {"skip_bad_samples": True, "cache_dir": str(tiny / "cache")},
                            "datasets": {"coco_caption": config("coco_caption", tiny, {"val": "ann/cap_val.json"})}})
    out = BaseTask(cfg).build_datasets(cfg)
    assert out["coco_caption"]["val"].skip_bad_samples is True
