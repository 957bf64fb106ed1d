"""CapFilt in one process: outputs in every format, stats that name bad inputs, resume, the builders read the output."""

import json
import tarfile

import pytest

from lavislite.capfilt import load_config, run
from lavislite.common.errors import ConfigError
from tests.helpers.capfilt import config, tree_bytes, write_shard


@pytest.fixture
def shards(tmp_path):
    a = write_shard(tmp_path / "web" / "a.tar", 5, seed=0, corrupt=(2,))
    b = write_shard(tmp_path / "web" / "b.tar", 3, seed=1, json_text=True)
    bad = tmp_path / "web" / "c.tar"
    bad.write_bytes(b"\x00garbage, not a tar file" * 40)
    return [str(a), str(b), str(bad)]


def test_outputs_stats_and_resume(tmp_path, models, shards):
    out = tmp_path / "out"
    cfg = load_config(config(tmp_path, models["tok"], models["cap"], models["itm"], shards, out))
    res = run(cfg)
    assert res.processed == ["a", "b", "c"] and res.skipped == []
    s = res.summary
    # a: 5 images (1 corrupt), 1 text each; b: 3 images, 2 web texts each; 2 synthetic captions per readable image
    assert (s["images"], s["corrupt_images"], s["texts_in"], s["synthetic_in"]) == (8, 1, 4 + 6, 2 * 7)
    assert s["corrupt"] == [{"key": "s002", "error": s["corrupt"][0]["error"], "shard": "a"}]
    assert "s002.png" in s["corrupt"][0]["error"]
    assert [u["shard"] for u in s["unreadable_shards"]] == ["c"] and "c.tar" in s["unreadable_shards"][0]["error"]
    assert sum(s["histogram"]["web"]) == 10 and sum(s["histogram"]["synthetic"]) == 14
    assert (out / "scores.png").stat().st_size > 1000

    # the webdataset shards: every kept text with its source and score; json meta passed through
    with tarfile.open(out / "shards" / "b.tar") as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    for meta in metas:
        assert meta["noise"] == "filename"
        assert meta["caption"] == [t["text"] for t in meta["texts"] if t["kept"]]
        assert {t["source"] for t in meta["texts"]} == {"web", "synthetic"}
        assert all(t["kept"] == (t["score"] >= 0.5) for t in meta["texts"])
    per_shard = [json.loads((out / "stats" / f"{n}.json").read_text()) for n in "abc"]
    assert sum(p["kept_web"] + p["kept_synthetic"] for p in per_shard) == len(json.loads((out / "bootstrapped.json").read_text()))

    # restart: nothing redone, nothing changed; a shard without stats is redone to the same bytes
    before = tree_bytes(out)
    assert run(cfg).skipped == ["a", "b", "c"]
    (out / "stats" / "a.json").unlink()
    (out / "shards" / ".a.tar.x.tmp").write_bytes(b"left by a killed run")
    assert run(cfg).processed == ["a"]
    assert tree_bytes(out) == before


def test_builders_read_the_output(tmp_path, models, shards):
    from lavislite.common.registry import registry
    from lavislite.datasets.datasets.pretrain_datasets import WebDatasetPretrain

    out = tmp_path / "out"
    run(load_config(config(tmp_path, models["tok"], models["cap"], models["itm"], shards[:2], out, filtering__threshold=0.0)))
    wds = list(WebDatasetPretrain(str(out / "shards" / "{a,b}.tar")))
    pairs = json.loads((out / "bootstrapped.json").read_text())
    assert len(wds) == len(pairs) == 4 + 6 + 2 * 7  # threshold 0 keeps every text of the 7 readable images
    builder = registry.get_builder_class("pretrain_json")
    bcfg = builder.default_config()
    bcfg.build_info.annotations.train.url = None
    bcfg.build_info.annotations.train.path = str(out / "bootstrapped.json")
    bcfg.build_info.images.storage = str(out)  # tar input: the json points at the images written under out/images
    for stage in ("train", "eval"):
        bcfg.vis_processor[stage].image_size = 16
    ds = builder(bcfg, tmp_path / "cache").build_datasets()["train"]
    assert len(ds) == len(pairs) and ds[len(ds) - 1]["image"].shape == (3, 16, 16)


def test_model_folders_give_the_same_output(tmp_path, models, shards):
    from lavislite.api import export_model, load_model
    from lavislite.models.tokenizer import init_tokenizer

    vocab = {"model.med_overrides.vocab_size": len(init_tokenizer(models["tok"]))}
    for name, key in (("blip_caption", "cap"), ("blip_image_text_matching", "itm")):
        model = load_model(name, "tiny", checkpoint=str(models[key]), tokenizer=str(models["tok"]), **vocab)
        export_model(model, tmp_path / name)
    ref = config(tmp_path, models["tok"], models["cap"], models["itm"], shards[:1], tmp_path / "ref")
    run(load_config(ref))
    folders = {**ref, "output": {"dir": str(tmp_path / "folders")},
               "captioner": {"model": str(tmp_path / "blip_caption")}, "filter": {"model": str(tmp_path / "blip_image_text_matching")}}
    run(load_config(folders))
    assert tree_bytes(tmp_path / "folders" / "shards") == tree_bytes(tmp_path / "ref" / "shards")


def test_ablation_switches(tmp_path, models, shards):
    out = tmp_path / "out"
    res = run(load_config(config(tmp_path, models["tok"], models["cap"], models["itm"], shards[:1], out,
                                 filtering__captioner=False, filtering__filter_web=False)))
    s = res.summary
    assert s["synthetic_in"] == 0 and s["kept_web"] == s["texts_in"] == 4


def test_json_input_and_beam(tmp_path, models):
    import numpy as np

    from tests.helpers.capfilt import png_bytes

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(5):
        (tmp_path / "imgs" / f"i{i}.png").write_bytes(png_bytes(rng))
        rows += [{"image": f"imgs/i{i}.png", "caption": "a red circle"}, {"image": f"imgs/i{i}.png", "caption": "a blue cross"}]
    rows.append({"image": "imgs/missing.png", "caption": "gone"})
    ann = tmp_path / "web.json"
    ann.write_text(json.dumps(rows))
    cfg = config(tmp_path, models["tok"], models["cap"], models["itm"], [], tmp_path / "out", input__annotations=[str(ann)],
                 input__image_root=str(tmp_path), input__images_per_shard=4, generation__method="beam", generation__num_beams=2)
    del cfg["input"]["shards"]
    res = run(load_config(cfg))
    assert res.processed == ["web-00000", "web-00001"]
    s = res.summary
    assert (s["images"], s["texts_in"], s["synthetic_in"], s["corrupt_images"]) == (6, 10, 10, 1)  # texts of readable images only
    assert "missing.png" in s["corrupt"][0]["error"]
    assert all(p["image"].startswith("imgs/") for p in json.loads((tmp_path / "out" / "bootstrapped.json").read_text()))


@pytest.mark.parametrize("bad, message", [
    ({"input": {}}, "exactly one of input.shards"),
    ({"generation": {"method": "greedy"}}, "generation.method='greedy'"),
    ({"filtering": {"threshold": 2}}, "filtering.threshold=2"),
    ({"captioner": {"model": "blip_caption"}}, "captioner.model='blip_caption'; write NAME:TYPE"),
    ({"output": {"formats": ["parquet"]}}, "output.formats has ['parquet']"),
])
def test_config_errors_name_the_key(bad, message):
    base = {"input": {"shards": ["x.tar"]}, "output": {"dir": "o"}}
    for k, v in bad.items():
        base[k] = {**base.get(k, {}), **v} if k != "input" else v
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        load_config(base)


def test_truncated_shard_keeps_what_came_before(tmp_path):
    from lavislite.capfilt.shards import InputShard, ShardReader

    path = write_shard(tmp_path / "t.tar", 6)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut mid-member, as a crashed download would
    reader = ShardReader(InputShard("t", str(path)), None)
    samples = list(reader)
    assert 1 <= len(samples) < 6 and all(s.error is None for s in samples[:-1])
    assert reader.error and "t.tar" in reader.error and f"after {len(samples)} samples" in reader.error
