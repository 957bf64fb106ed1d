"""The persistent index: incremental re-indexing, kill-safety, model identity, search directions."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import spec_flags
from PIL import Image

from lavislite.common.errors import ConfigError
from lavislite.serve.build import build_index
from lavislite.serve.index import ImageIndex
from lavislite.serve.search import Searcher, classify
from lavislite.serve.sources import discover_entries

QUERIES = ["a red square", "blue circle on the left", "what is the shape"]


def write_noise(folder: Path, n: int, seed: int = 0, size: int = 16, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(start, start + n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i:03d}.png")


def build(lm, folder, out, **kw):
    entries, texts = discover_entries([str(folder)])
    return build_index(lm, entries, str(out), texts=texts, show_progress=False, **kw)


def results(searcher):
    """Every search direction's ranking (ids and rounded scores) for a fixed set of queries."""
    t2i = searcher.text_to_image(QUERIES, k=5, rerank_k=4)
    img = Image.open(searcher.index.entries[0].path).convert("RGB")
    i2i = searcher.image_to_image([img], k=5)
    strip = lambda hits: [(h["id"], round(h["score"], 4)) for h in hits]
    return [strip(h) for h in t2i + i2i]


def test_incremental_reindex_encodes_only_new_and_changed(tmp_path, loaded):
    lm = loaded("blip_retrieval")
    write_noise(tmp_path / "imgs", 12)
    index, stats = build(lm, tmp_path / "imgs", tmp_path / "idx", commit_every=5)
    assert (len(index), stats.encoded, stats.kept) == (12, 12, 0)
    write_noise(tmp_path / "imgs", 1, seed=7, start=12)  # one new file
    index, stats = build(lm, tmp_path / "imgs", tmp_path / "idx")
    assert (len(index), stats.encoded, stats.kept, stats.removed) == (13, 1, 12, 0)
    (tmp_path / "imgs" / "img003.png").unlink()  # deleted files leave
    write_noise(tmp_path / "imgs", 1, seed=9, start=5)  # a changed file is re-encoded
    os.utime(tmp_path / "imgs" / "img005.png", ns=(1, 1))
    index, stats = build(lm, tmp_path / "imgs", tmp_path / "idx")
    assert (len(index), stats.encoded, stats.kept, stats.removed) == (12, 1, 11, 2)
    assert not any(e.id.endswith("img003.png") for e in index.entries)
    clean, _ = build(lm, tmp_path / "imgs", tmp_path / "clean")
    assert [e.id for e in clean.entries] == [e.id for e in index.entries]
    np.testing.assert_allclose(clean.vectors, index.vectors, atol=1e-5)
    # only the live generation's files remain
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == sorted(
        ["meta.json", meta["faiss"], *(f"{s}.{x}" for s in meta["segments"] for x in ("npy", "json"))])


def test_kill9_during_reindex_then_rerun_equals_clean_index(tmp_path, loaded, spec_of):
    """200 images indexed; 100 change; the re-index is killed with SIGKILL after its first commit; a re-run
    finishes it, and every search gives the results of an index built cleanly from the final folder."""
    lm = loaded("blip_retrieval")
    imgs, idx = tmp_path / "imgs", tmp_path / "idx"
    write_noise(imgs, 200)
    build(lm, imgs, idx)
    write_noise(imgs, 100, seed=1)  # images 0..99 change
    for i in range(100):
        os.utime(imgs / f"img{i:03d}.png", ns=(10**9, 10**9))
    gen = json.loads((idx / "meta.json").read_text())["generation"]
    env = dict(os.environ, OMP_NUM_THREADS="1", LAVISLITE_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "lavislite", "index", str(imgs), "--out", str(idx), "--batch-size", "1",
                             "--commit-every", "4", "-q", *spec_flags(spec_of("blip_retrieval"))],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    # wait for the removal commit and at least one appended segment, then kill mid-run
    while json.loads((idx / "meta.json").read_text())["generation"] < gen + 2:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    partial = ImageIndex.open(idx)  # a valid index: old rows minus the changed ones, plus what was committed
    assert 100 <= len(partial) < 200
    index, stats = build(lm, imgs, idx)
    assert len(index) == 200 and stats.encoded == 200 - len(partial) and stats.removed == 0
    clean, _ = build(lm, imgs, tmp_path / "clean")
    assert [e.id for e in index.entries] == [e.id for e in clean.entries]
    assert results(Searcher.open(index, lm)) == results(Searcher.open(clean, lm))


def test_search_refuses_an_index_made_by_another_model(tmp_path, loaded):
    write_noise(tmp_path / "imgs", 4)
    index, _ = build(loaded("blip_retrieval"), tmp_path / "imgs", tmp_path / "idx")
    with pytest.raises(ConfigError, match=r"made by blip_retrieval:tiny --checkpoint .*retrieval_0.pth.*model given is blip_retrieval:tiny"):
        Searcher.open(index, loaded("blip_retrieval", seed=1))
    with pytest.raises(ConfigError, match="made by blip_retrieval:tiny"):
        build(loaded("blip_retrieval", seed=1), tmp_path / "imgs", tmp_path / "idx")


def test_search_directions_and_rerank(tmp_path, loaded):
    lm = loaded("blip_retrieval")
    write_noise(tmp_path / "imgs", 10)
    (tmp_path / "texts.txt").write_text("a red square\na blue circle\ntwo green crosses\n")
    entries, _ = discover_entries([str(tmp_path / "imgs")])
    texts = (tmp_path / "texts.txt").read_text().split("\n")[:3]
    index, _ = build_index(lm, entries, str(tmp_path / "idx"), texts=texts, show_progress=False)
    s = Searcher.open(index, lm)
    hits = s.text_to_image(["a red square"], k=3, rerank_k=6)[0]
    assert [h["rank"] for h in hits] == [1, 2, 3] and all("itm" in h for h in hits)
    assert all(abs(h["score"] - h["itc"] - h["itm"]) < 1e-5 for h in hits)  # BLIP's score: ITM logit + cosine
    assert hits == sorted(hits, key=lambda h: -h["score"])
    # the ITM logit equals the model's own itm_logits of that pair
    model = lm.model
    tok, _ = model.encode_image(lm.images([Image.open(hits[0]["id"]).convert("RGB")]))
    _, ids, atts = model.encode_text([lm.txt("a red square")])
    assert abs(float(model.itm_logits(tok, ids, atts)[0]) - hits[0]["itm"]) < 1e-4
    cos = s.text_to_image(["a red square"], k=3, rerank_k=0)[0]
    assert all("itm" not in h and h["score"] == h["itc"] for h in cos)
    img = Image.open(index.entries[4].path).convert("RGB")
    assert s.image_to_image([img], k=1)[0][0]["id"] == index.entries[4].id
    i2t = s.image_to_text([img], k=2)[0]
    assert len(i2t) == 2 and {h["text"] for h in i2t} <= set(texts) and "itm" in i2t[0]


def test_classify_over_caller_labels(loaded):
    lm = loaded("blip_retrieval")
    img = Image.fromarray(np.full((16, 16, 3), 200, np.uint8))
    labels = ["a red square", "a blue circle", "a green cross"]
    plain = classify(lm, [img], labels)[0]
    assert sorted(r["label"] for r in plain) == sorted(labels) and abs(sum(r["prob"] for r in plain) - 1) < 1e-5
    _, image_feats = lm.model.encode_image(lm.images([img]))
    sims = lm.model.itc_similarity(image_feats, lm.model.encode_text([lm.txt(t) for t in labels])[0])[0]
    assert {r["label"]: round(r["itc"], 5) for r in plain} == {t: round(float(v), 5) for t, v in zip(labels, sims)}
    ranked = classify(lm, [img], labels, rerank=True)[0]
    assert all("itm" in r and abs(r["score"] - r["itc"] - r["itm"]) < 1e-5 for r in ranked)
    with pytest.raises(Exception, match="distinct"):
        classify(lm, [img], ["a", "a"])


def test_shards_and_annotation_json_sources(tmp_path, loaded):
    """A webdataset shard's members and an annotation json's images (with its captions as searchable texts)."""
    import tarfile

    from lavislite.serve.sources import ImageReader

    write_noise(tmp_path / "imgs", 4)
    with tarfile.open(tmp_path / "part-000.tar", "w") as tar:
        for i in range(3):
            tar.add(tmp_path / "imgs" / f"img{i:03d}.png", arcname=f"sample{i}.png")
            info = tarfile.TarInfo(f"sample{i}.txt")
            info.size = 5
            tar.addfile(info, io.BytesIO(b"hello"))
    ann = [{"image": "imgs/img000.png", "caption": ["a red square", "a square"]}, {"image": "imgs/img003.png", "caption": "two crosses"}]
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    entries, texts = discover_entries([str(tmp_path / "part-000.tar"), str(tmp_path / "ann.json")])
    ids = [e.id for e in entries]
    assert sum("#sample" in i for i in ids) == 3 and sum(i.endswith(".png") for i in ids) == 2
    assert texts == ["a red square", "a square", "two crosses"]
    member = ImageReader()(f"{os.path.normpath(tmp_path / 'part-000.tar')}#sample1")
    assert np.array_equal(np.asarray(member), np.asarray(Image.open(tmp_path / "imgs" / "img001.png").convert("RGB")))
    index, stats = build_index(loaded("blip_retrieval"), entries, str(tmp_path / "idx"), texts=texts, show_progress=False)
    assert len(index) == 5 and index.texts == texts and stats.encoded == 5
    hits = Searcher.open(index, loaded("blip_retrieval")).text_to_image(["a red square"], k=5, rerank_k=5)[0]
    assert len(hits) == 5  # re-ranking re-read the shard members too


@pytest.mark.slow
def test_torchrun_two_ranks_build_the_same_index(tmp_path, loaded, spec_of):
    write_noise(tmp_path / "imgs", 10)
    env = dict(os.environ, OMP_NUM_THREADS="1", LAVISLITE_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0", "--rdzv-backend=c10d",
           "--rdzv-endpoint=localhost:0", "-m", "lavislite", "index", str(tmp_path / "imgs"), "--out", str(tmp_path / "idx"),
           "--commit-every", "4", "--batch-size", "2", "--device", "cpu", *spec_flags(spec_of("blip_retrieval"))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "10 images (10 encoded" in proc.stderr
    index = ImageIndex.open(tmp_path / "idx")
    clean, _ = build(loaded("blip_retrieval"), tmp_path / "imgs", tmp_path / "clean")
    assert [e.id for e in index.entries] == [e.id for e in clean.entries]
    np.testing.assert_allclose(index.vectors, clean.vectors, atol=1e-5)
