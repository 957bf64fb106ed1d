"""VQA weights, NLVR swap semantics, webdataset sharding over ranks x workers."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.datasets.annotations import AnnotationTable
from lavislite.datasets.datasets.nlvr_datasets import NLVRDataset, swap_left_right
from lavislite.datasets.datasets.pretrain_datasets import WebDatasetPretrain
from lavislite.datasets.datasets.vqa_datasets import answer_weights, load_answer_list
from tests.helpers.datasets import build, dump


def test_answer_weights():
    answers, weights = answer_weights(["a", "b", "a", "a", "c"], "vqa")
    assert answers == ["a", "b", "c"] and weights == pytest.approx([0.6, 0.2, 0.2])
    assert answer_weights(["x", "y", "x"], "vg") == (["x", "y"], [0.2, 0.2])
    assert answer_weights(["only"], "okvqa") == (["only"], [1.0])


def test_answer_list_dedup_warns(tmp_path, caplog):
    p = dump(tmp_path / "al.json", ["b", "a", "b", "c", "a"])
    with caplog.at_level("WARNING"):
        assert load_answer_list(p) == ["b", "a", "c"]
    assert "al.json" in caplog.text and "2 duplicate" in caplog.text


def test_vqa_plus_vg_concat_collation(tiny):
    from torch.utils.data import ConcatDataset

    vqa = build("coco_vqa", tiny, {"train": "ann/vqa_train.json"})["train"]
    vg = build("vg_vqa", tiny, {"train": "ann/vg_train.json"})["train"]
    both = ConcatDataset([vqa, vg])
    b = vqa.collater([both[0], both[2]])
    assert b["answer"] == ["red", "blue", "left"]
    assert torch.allclose(b["weight"], torch.tensor([0.75, 0.25, 0.2]))
    assert b["n_answers"].tolist() == [2, 1]
    # the model's loss: sum over answers of weight * loss, per question via n_answers
    assert torch.repeat_interleave(torch.arange(2), b["n_answers"]).tolist() == [0, 0, 1]


# -- NLVR -----------------------------------------------------------------------------------------
def _nlvr(train: bool, seed: int = 0, swap: bool = True) -> NLVRDataset:
    recs = [{"images": ["a.jpg", "b.jpg"], "sentence": "The LEFT image has more dogs than the right one.", "label": "True"},
            {"images": ["c.jpg", "d.jpg"], "sentence": "There are two cats.", "label": "False"}] * 20
    table = AnnotationTable(records=recs, origins=[(0, i) for i in range(len(recs))], files=[Path("nlvr.json")])

    class Paths(NLVRDataset):  # images replaced by their paths: the test looks at the order only
        def process_image(self, rel):
            return rel

    from lavislite.processors.text_processors import BlipCaptionProcessor

    return Paths(table, None, BlipCaptionProcessor(max_words=40), train=train, eval_seed=seed, swap=swap)


def test_swap_left_right_words():
    assert swap_left_right("the left dog and the right cat left") == "the right dog and the left cat right"
    assert swap_left_right("leftover bright") == "leftover bright"


def test_nlvr_swap_semantics():
    ds = _nlvr(train=False)
    seen = set()
    for i in range(len(ds)):
        s = ds.get_sample(i)
        if i % 2 == 0:
            if s["image0"] == "a.jpg":
                assert s["text_input"] == "the left image has more dogs than the right one"
            else:
                assert (s["image0"], s["image1"]) == ("b.jpg", "a.jpg")
                assert s["text_input"] == "the right image has more dogs than the left one"
            assert s["label"] == 1
        else:
            assert s["text_input"] == "there are two cats" and s["label"] == 0
        seen.add(s["image0"])
    assert {"a.jpg", "b.jpg", "c.jpg", "d.jpg"} <= seen  # both orders occur
    # eval: deterministic per index and seed
    again = _nlvr(train=False)
    assert [again.get_sample(i)["image0"] for i in range(len(ds))] == [ds.get_sample(i)["image0"] for i in range(len(ds))]
    other = _nlvr(train=False, seed=1)
    assert [other.get_sample(i)["image0"] for i in range(len(ds))] != [ds.get_sample(i)["image0"] for i in range(len(ds))]
    assert all(_nlvr(train=False, swap=False).get_sample(i)["image0"] in ("a.jpg", "c.jpg") for i in range(len(ds)))


def test_nlvr_train_swap_follows_torch_seed():
    ds = _nlvr(train=True)
    torch.manual_seed(0)
    first = [ds.get_sample(0)["image0"] for _ in range(30)]
    torch.manual_seed(0)
    assert [ds.get_sample(0)["image0"] for _ in range(30)] == first
    assert set(first) == {"a.jpg", "b.jpg"}


# -- webdataset -----------------------------------------------------------------------------------
def _write_shard(path: Path, start: int, n: int, text_kind: str = "txt") -> None:
    rng = np.random.default_rng(start)
    with tarfile.open(path, "w") as tar:
        for k in range(start, start + n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, format="PNG")
            if text_kind == "txt":
                text = f"caption {k}".encode()
            else:
                text = json.dumps({"caption": f"caption {k}"}).encode()
            for name, data in ((f"{k:05d}.png", buf.getvalue()), (f"{k:05d}.{text_kind}", text)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("shards")
    _write_shard(d / "000.tar", 0, 6, "txt")
    _write_shard(d / "001.tar", 6, 6, "json")
    for i in range(2, 6):
        _write_shard(d / f"{i:03d}.tar", 12 + 3 * (i - 2), 3)
    return d


def _consume(pattern: str, world: int, workers: int, **kw) -> list[list[str]]:
    seen = []
    for rank in range(world):
        ds = WebDatasetPretrain(pattern, text_processor=lambda t: t, rank=rank, world_size=world, **kw)
        loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=ds.collater)
        seen.append([t for b in loader for t in b["text_input"]])
    return seen


@pytest.mark.parametrize("pattern, n", [("{000..001}.tar", 12), ("{000..005}.tar", 24)])
def test_webdataset_each_sample_once_over_ranks_and_workers(shards, pattern, n):
    # 2 shards < 4 readers: sample-level split; 6 shards >= 4 readers: shard-level split
    per_rank = _consume(str(shards / pattern), world=2, workers=2)
    flat = [t for r in per_rank for t in r]
    assert sorted(flat) == sorted(f"caption {k}" for k in range(n))
    assert all(per_rank)


def test_webdataset_shuffle_keeps_every_sample(shards):
    per_rank = _consume(str(shards / "{000..005}.tar"), world=1, workers=0, shuffle_buffer=5)
    assert sorted(per_rank[0]) == sorted(f"caption {k}" for k in range(24))


def test_webdataset_builder(shards, tmp_path):
    cls = registry.get_builder_class("pretrain_wds")
    cfg = cls.default_config()
    with pytest.raises(ConfigError, match="shards is not set"):
        cls(cfg, tmp_path).build_datasets()
    cfg.build_info.shards = str(shards / "{000..001}.tar")
    cfg.vis_processor.train.image_size = 32
    ds = cls(cfg, tmp_path).build_datasets()["train"]
    assert isinstance(ds, torch.utils.data.IterableDataset)
    b = ds.collater([s for _, s in zip(range(3), ds)])
    assert b["image"].shape == (3, 3, 32, 32) and all(t.startswith("caption ") for t in b["text_input"])


def test_webdataset_bad_members(tmp_path):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("a.png", b"not a png"), ("a.txt", b"broken image"), ("b.txt", b"no image")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    _write_shard(tmp_path / "good.tar", 0, 2)
    with pytest.raises(DataError, match=r"bad\.tar, sample 'a': cannot decode \.png"):
        list(WebDatasetPretrain(str(path)))
    ds = WebDatasetPretrain([str(path), str(tmp_path / "good.tar")], skip_bad_samples=True)
    assert len(list(ds)) == 2 and ds.num_skipped == 2
    with pytest.raises(DataError, match="missing.tar"):
        list(WebDatasetPretrain(str(tmp_path / "missing.tar")))
