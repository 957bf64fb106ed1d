"""vqa, match, retrieve, video-retrieve and features on tiny checkpoints, checked against direct model calls."""

import json
import os

import numpy as np
import pytest
import torch

from lavislite.cli import main
from tests.helpers.inference import write_images, write_videos

Q = ["-q", "--batch-size", "2"]


def out_lines(capsys):
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def _load(name, ckpt, tiny_tokenizer_dir):
    from lavislite.api import load_model_and_preprocess
    from lavislite.models.tokenizer import init_tokenizer

    return load_model_and_preprocess(name, "tiny", checkpoint=str(ckpt(name)), tokenizer=str(tiny_tokenizer_dir),
                                     **{"model.med_overrides.vocab_size": len(init_tokenizer(tiny_tokenizer_dir))})


@pytest.fixture()
def images(tmp_path):
    return write_images(tmp_path / "imgs", 3)


def test_vqa_generate_rank_and_several_questions(tmp_path, images, model_args, ckpt, tiny_tokenizer_dir, capsys):
    folder = str(tmp_path / "imgs")
    assert main(["vqa", folder, "What color is it?", "--max-length", "4", *Q, *model_args("blip_vqa")]) == 0
    recs = out_lines(capsys)
    assert [r["id"] for r in recs] == [os.path.normpath(p) for p in images]
    assert all(r["question"] == "What color is it?" and isinstance(r["answer"], str) for r in recs)
    model, vis, txt = _load("blip_vqa", ckpt, tiny_tokenizer_dir)
    image = torch.stack([vis["eval"](p) for p in images])
    direct = model.predict_answers({"image": image, "text_input": [txt["eval"]("What color is it?")] * 3},
                                   inference_method="generate", max_len=4)
    assert [r["answer"] for r in recs] == direct
    answers = tmp_path / "answers.txt"
    answers.write_text("red\nblue\ngreen\nyes\n")
    assert main(["vqa", folder, "-Q", "what color?", "-Q", "is it a square?", "--answer-list", str(answers), *Q,
                 *model_args("blip_vqa")]) == 0
    recs = out_lines(capsys)
    assert all(r["question"] == ["what color?", "is it a square?"] and len(r["answer"]) == 2 for r in recs)
    assert all(a in {"red", "blue", "green", "yes"} for r in recs for a in r["answer"])
    assert main(["vqa", folder, *model_args("blip_vqa")]) == 2
    assert "give images and then the question" in capsys.readouterr().err


def test_match_scores_equal_direct_model_calls(tmp_path, images, model_args, ckpt, tiny_tokenizer_dir, capsys):
    assert main(["match", str(tmp_path / "imgs"), "-t", "a red square", "-t", "a blue circle", *Q,
                 *model_args("blip_image_text_matching")]) == 0
    recs = out_lines(capsys)
    model, vis, txt = _load("blip_image_text_matching", ckpt, tiny_tokenizer_dir)
    image = torch.stack([vis["eval"](p) for p in images])
    texts = [txt["eval"](t) for t in ("a red square", "a blue circle")]
    for j, t in enumerate(texts):
        itm = model.match_probability({"image": image, "text_input": [t] * 3})
        assert np.allclose([r["itm"][j] for r in recs], itm.tolist(), atol=1e-5)
    itc = model({"image": image, "text_input": texts}, match_head="itc")
    assert np.allclose([r["itc"] for r in recs], itc.tolist(), atol=1e-5)
    assert main(["match", *map(str, images[:1]), "a red square", "--head", "itc", "--format", "table", *Q,
                 *model_args("blip_image_text_matching")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["id", "text", "itc"] and f"{itc[0, 0].item():.4f}" in table[2]


def test_retrieve_ranks_by_itc_then_itm(tmp_path, images, model_args, ckpt, tiny_tokenizer_dir, capsys):
    args = ["retrieve", "--images", str(tmp_path / "imgs"), "--query", "a red square", "--query", "blue", *Q,
            *model_args("blip_retrieval")]
    assert main(args + ["--top-k", "2", "--rerank-k", "0"]) == 0
    cos_only = out_lines(capsys)
    model, vis, txt = _load("blip_retrieval", ckpt, tiny_tokenizer_dir)
    with torch.no_grad():
        sims = model.itc_similarity(model.encode_image(torch.stack([vis["eval"](p) for p in images]))[1],
                                    model.encode_text([txt["eval"]("a red square"), txt["eval"]("blue")])[0])
    for q, query in enumerate(["a red square", "blue"]):
        got = [r for r in cos_only if r["query"] == query]
        order = sims[:, q].argsort(descending=True)[:2].tolist()
        assert [r["id"] for r in got] == [os.path.normpath(images[i]) for i in order]
        assert np.allclose([r["score"] for r in got], sims[order, q].tolist(), atol=1e-5) and "itm" not in got[0]
    assert main(args + ["--top-k", "3", "-o", str(tmp_path / "r.jsonl")]) == 0
    recs = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(recs) == 6 and [r["rank"] for r in recs] == [1, 2, 3, 1, 2, 3]
    for r in recs:
        assert r["score"] == pytest.approx(r["itc"] + r["itm"], abs=1e-5)
    assert all(a["score"] >= b["score"] for a, b in zip(recs, recs[1:]) if a["query"] == b["query"])


def test_video_retrieve(tmp_path, model_args, capsys):
    vids = write_videos(tmp_path / "vids", 3)
    assert main(["video-retrieve", "--videos", str(tmp_path / "vids"), "--query", "a red square", "--num-frames", "2",
                 "--top-k", "2", *Q, *model_args("blip_retrieval")]) == 0
    recs = out_lines(capsys)
    assert len(recs) == 2 and {r["id"] for r in recs} <= {os.path.normpath(v) for v in vids}
    assert all(r["score"] == pytest.approx(r["itc"] + r["itm"], abs=1e-5) for r in recs)


def test_features_jsonl_shards_resume_and_text(tmp_path, images, model_args, ckpt, tiny_tokenizer_dir):
    model, vis, txt = _load("blip_feature_extractor", ckpt, tiny_tokenizer_dir)
    direct = model.extract_features({"image": torch.stack([vis["eval"](p) for p in images])}, mode="image").image_embeds_proj[:, 0]
    jl = tmp_path / "f.jsonl"
    assert main(["features", str(tmp_path / "imgs"), "-o", str(jl), *Q, *model_args("blip_feature_extractor")]) == 0
    recs = [json.loads(x) for x in jl.read_text().splitlines()]
    assert np.allclose([r["feature"] for r in recs], direct.numpy(), atol=1e-5)

    from lavislite.inference.feature_shards import load_feature_shards

    shards = tmp_path / "feats"
    argv = ["features", str(tmp_path / "imgs"), "-o", str(shards), "--shard-format", "npy", "--shard-size", "2", *Q,
            *model_args("blip_feature_extractor")]
    assert main(argv) == 0
    ids, feats = load_feature_shards(shards)
    assert ids == [os.path.normpath(p) for p in images] and np.allclose(feats, direct.numpy(), atol=1e-5)
    before = sorted(p.name for p in shards.iterdir())
    assert main(argv) == 0  # resumed: no new shard
    assert sorted(p.name for p in shards.iterdir()) == before

    texts = tmp_path / "texts.txt"
    texts.write_text("a red square\n\nblue circle\n")
    assert main(["features", str(texts), "--mode", "text", "--kind", "cls", "-o", str(tmp_path / "t.jsonl"), *Q,
                 *model_args("blip_feature_extractor")]) == 0
    trecs = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["id"] for r in trecs] == [f"{texts}:1", f"{texts}:3"]
    want = model.extract_features({"text_input": [txt["eval"]("a red square")]}, mode="text").text_embeds[0, 0]
    assert np.allclose(trecs[0]["feature"], want.numpy(), atol=1e-5)
