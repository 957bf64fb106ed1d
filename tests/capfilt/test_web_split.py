"""The shapes world's noisy web split: stated noise rate, each noise kind as described, ground truth, reuse;
and the filter-vs-truth measurement (precision / recall) on CapFilt output shards."""

import io
import json
import re
import tarfile

import pytest

from lavislite.demo.shapes import Obj, canonical
from lavislite.demo.web import BOILERPLATE, NOISE_TYPES, generate_web
from lavislite.demo.world import generate_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), seed=1, n_train=4, n_val=2, n_test=6, n_videos=2, image_size=32)


def _samples(web):
    out = {}
    for shard in web.shards:
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            for n in names:
                if n.endswith(".json"):
                    out[n[:-5]] = json.loads(tar.extractfile(n).read())
            assert sorted(names) == sorted([f"{k}.{e}" for k in (n[:-5] for n in names if n.endswith(".json")) for e in ("jpg", "json")])
    return out


def test_noise_rate_kinds_and_truth(world):
    web = generate_web(world, 60, 0.4, images_per_shard=25, seed=2)
    assert len(web.shards) == 3 and len(web.noisy_keys) == 24  # exactly the stated rate
    samples = _samples(web)
    assert {k: v["noise"] for k, v in samples.items()} == web.truth == json.loads((web.root / "truth.json").read_text())
    assert set(web.truth.values()) <= {None, *NOISE_TYPES}
    for sample in samples.values():
        text, noise = sample["caption"], sample["noise"]
        if noise == "filename":
            assert re.fullmatch(r"[A-Za-z_]+\d+\.(jpg|jpeg|png|JPG)", text), text
        elif noise == "boilerplate":
            assert text in BOILERPLATE
        elif noise in (None, "wrong_attribute", "unrelated"):
            assert re.search(r"(small|large) (red|green|blue|yellow|purple|white) (circle|square|triangle|cross)", text), text
    again = generate_web(world, 60, 0.4, images_per_shard=25, seed=2)
    assert again.reused and again.truth == web.truth


def test_web_scenes_avoid_the_test_split(world):
    graphs = json.loads(world.files["scenes"].read_text())["images"]
    test = {canonical(Obj(**o) for o in graphs[r["image"]]) for r in json.loads(world.files["coco_karpathy_test"].read_text())}
    web = generate_web(world, 40, 0.0, images_per_shard=40, seed=3)
    assert not web.noisy_keys
    for sample in _samples(web).values():  # a clean alt-text names every object of its scene; none is a test scene
        assert sample["caption"] not in {c for r in json.loads(world.files["coco_karpathy_test"].read_text()) for c in r["caption"]}
    assert test  # sanity: the world has test scenes to avoid


def test_noise_detection_precision_recall(tmp_path):
    from lavislite.capfilt.stats import noise_detection

    truth = {"a": None, "b": None, "c": "filename", "d": "unrelated", "e": "partial"}
    # the filter kept a (clean), b's web text removed (false alarm), c removed, d kept (missed), e's image dropped entirely
    kept = {"a": True, "b": False, "c": False, "d": True}
    with tarfile.open(tmp_path / "out.tar", "w") as tar:
        for key, k in kept.items():
            data = json.dumps({"texts": [{"source": "web", "kept": k}, {"source": "synthetic", "kept": True}]}).encode()
            info = tarfile.TarInfo(f"{key}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    q = noise_detection([tmp_path / "out.tar"], truth)
    assert (q["removed"], q["removed_noisy"]) == (3, 2)  # b, c, e removed; c and e are noise
    assert q["precision"] == pytest.approx(2 / 3) and q["recall"] == pytest.approx(2 / 3) and q["clean_kept"] == 0.5
    assert q["recall_by_label"] == {"filename": 1.0, "partial": 1.0, "unrelated": 0.0}
