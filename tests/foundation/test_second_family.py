"""A second model family registered from outside lavislite runs through loading, evaluation and the CLI.

The family (tests/foundation/plugin_pkg/second_family.py) brings its own vision encoder, checkpoint
layout and several ITC vectors per image with a max over them; nothing in lavislite knows it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import lavislite
from lavislite.cli import main as cli_main
from lavislite.common.checkpoint import save_checkpoint
from lavislite.common.registry import registry
from tests.helpers.tasks import COLORS, SHAPES, draw, write_karpathy

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread

PLUGIN = "tests.foundation.plugin_pkg.second_family"
EVAL_PROC = {"name": "blip_image_eval", "image_size": 32}


@pytest.fixture(scope="module")
def family():
    registry.import_modules([PLUGIN])
    from tests.foundation.plugin_pkg import second_family

    return second_family


@pytest.fixture
def foreign_checkpoint(family, tiny_tokenizer_dir, tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    """Weights saved in the family's own key layout, and the model's state dict they hold."""
    torch.manual_seed(0)
    source = lavislite.load_model("toyfam_retrieval", "tiny", tokenizer=str(tiny_tokenizer_dir))
    state = source.state_dict()
    path = save_checkpoint(family.ToyFamLayout.to_foreign(state), tmp_path / "toyfam.safetensors")
    return path, state


def _sims(model, vis, images: list[Path], texts: list[str]) -> torch.Tensor:
    """The model's own ITC similarity (n_img, n_txt) of image files and texts."""
    with torch.inference_mode():
        batch = torch.stack([vis(Image.open(p).convert("RGB")) for p in images])
        _, image_feats = model.encode_image(batch)
        text_feats, _, _ = model.encode_text(texts)
        return model.itc_similarity(image_feats, text_feats)


def test_the_family_uses_its_own_parts(family, foreign_checkpoint, tiny_tokenizer_dir):
    path, state = foreign_checkpoint
    assert all(k.startswith("toyfam/") for k in lavislite.common.checkpoint.read_state_dict(path))
    model, vis, txt = lavislite.load_model_and_preprocess("toyfam_retrieval", "tiny", checkpoint=str(path),
                                                          tokenizer=str(tiny_tokenizer_dir))
    report = model.load_report
    assert report.converter == "toyfam_layout" and not report.missing and report.clean, str(report)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert isinstance(model.visual_encoder, family.PatchEncoder)
    assert model.tokenizer is registry.get_tokenizer("bert_wordpiece")(str(tiny_tokenizer_dir))
    assert vis["eval"].transform is not None and txt["eval"]("A Cat.") == "a cat"

    image = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        _, feats = model.encode_image(image)
        text_feats, _, _ = model.encode_text(["a red square", "a blue circle", "a green cross"])
        sims = model.itc_similarity(feats, text_feats)
    assert feats.shape == (2, 3, 8)  # three ITC vectors per image
    per_vector = torch.nn.functional.normalize(feats, dim=-1) @ torch.nn.functional.normalize(text_feats, dim=-1).t()
    torch.testing.assert_close(sims, per_vector.amax(1))


def test_retrieval_evaluation_ranks_by_the_models_max_over_vectors(family, foreign_checkpoint, tiny_tokenizer_dir, tmp_path):
    path, _ = foreign_checkpoint
    model, vis, _ = lavislite.load_model_and_preprocess("toyfam_retrieval", "tiny", checkpoint=str(path),
                                                        tokenizer=str(tiny_tokenizer_dir))
    files = write_karpathy(tmp_path / "coco", n_train=1, n_eval=4)
    ann = {"build_info": {"annotations": {"train": {"url": None}, "val": {"url": None},
                                          "test": {"url": None, "path": str(files["test"])}},
                          "images": {"storage": str(tmp_path / "coco")}},
           "vis_processor": {"eval": EVAL_PROC}}
    metrics, scores = lavislite.evaluate(model, "coco_retrieval", task="retrieval", data_options=ann, k_test=2,
                                         batch_size=4, num_workers=0, scores=True)
    assert {"txt_r1", "img_r1"} <= set(metrics)

    records = json.loads(files["test"].read_text())
    images = [tmp_path / "coco" / r["image"] for r in records]
    texts = [c for r in records for c in r["caption"]]
    sims = _sims(model, vis["eval"], images, texts)
    with torch.inference_mode():
        tokens, _ = model.encode_image(torch.stack([vis["eval"](Image.open(p).convert("RGB")) for p in images]))
        _, ids, atts = model.encode_text(texts)
    # each query's k_test best by the model's own similarity, re-scored as itm logit + similarity
    for i in range(len(images)):
        top = sims[i].topk(2).indices
        kept = scores["i2t"][i].topk(2).indices
        assert set(kept.tolist()) == set(top.tolist())
        itm = model.itm_logits(tokens[i : i + 1].repeat(2, 1, 1), ids[top], atts[top])
        torch.testing.assert_close(scores["i2t"][i, top].float(), (itm + sims[i, top]).float(), rtol=1e-4, atol=1e-4)
    for t in range(len(texts)):
        assert set(scores["t2i"][t].topk(2).indices.tolist()) == set(sims[:, t].topk(2).indices.tolist())


def test_cli_retrieve_on_a_saved_folder_ranks_by_the_models_scores(family, foreign_checkpoint, tiny_tokenizer_dir, tmp_path):
    path, _ = foreign_checkpoint
    model, vis, _ = lavislite.load_model_and_preprocess("toyfam_retrieval", "tiny", checkpoint=str(path),
                                                        tokenizer=str(tiny_tokenizer_dir))
    folder = model.save_pretrained(tmp_path / "toyfam_model")
    assert PLUGIN in (folder / "lavislite_model.yaml").read_text()
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    images = []
    for i, (color, shape) in enumerate(zip(COLORS * 2, SHAPES * 2)):  # six different pictures
        images.append(gallery / f"{color}_{shape}.png")
        draw(color, shape, seed=i).save(images[-1])
    out = tmp_path / "hits.jsonl"
    query = "a red square"
    rc = cli_main(["retrieve", "--images", str(gallery), "--query", query, "--model", str(folder),
                   "--top-k", str(len(images)), "--rerank-k", "0", "--output", str(out), "--quiet"])
    assert rc == 0
    hits = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert [h["rank"] for h in hits] == list(range(1, len(images) + 1)) and all(h["score"] == h["itc"] for h in hits)
    sims = _sims(model, vis["eval"], images, [query])[:, 0]
    with torch.inference_mode():  # the order of one vector per image (the queries' mean) differs: the max decides
        _, feats = model.encode_image(torch.stack([vis["eval"](Image.open(p).convert("RGB")) for p in images]))
        mean_sims = model.itc_similarity(feats.mean(1, keepdim=True), model.encode_text([query])[0])[:, 0]
    assert mean_sims.argsort(descending=True).tolist() != sims.argsort(descending=True).tolist()
    assert [h["id"] for h in hits] == [str(images[i]) for i in sims.argsort(descending=True).tolist()]
    torch.testing.assert_close(torch.tensor([h["itc"] for h in hits]), sims.sort(descending=True).values, rtol=1e-4, atol=1e-4)
