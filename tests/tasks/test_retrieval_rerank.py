"""Retrieval re-ranking: the batched, sharded computation equals BLIP's per-query loop."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from lavislite.tasks.retrieval import (
    FILL,
    RetrievalFeatures,
    dense_scores,
    encode_texts,
    query_shard,
    retrieval_scores,
)
from tests.helpers.tasks import ToyRetrieval

N_IMG, N_TXT = 7, 15


def features(model, n_img=N_IMG, n_txt=N_TXT) -> RetrievalFeatures:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n_img, 3, 32, 32, generator=g) if not isinstance(model, ToyRetrieval) else torch.randn(n_img, 3, 4, 4, generator=g)
    texts = [f"a {c} {s} number {i}" for i, (c, s) in enumerate(zip(["red", "blue", "green"] * 9, ["square", "circle", "cross", "cross"] * 9))][
        :n_txt
    ]
    with torch.inference_mode():
        t_emb, ids, atts = encode_texts(model, texts, batch_size=4)
        tokens, proj = model.encode_image(images)
    return RetrievalFeatures(tokens, F.normalize(proj, dim=-1), ids, atts, t_emb)


def reference(model, feats: RetrievalFeatures, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BLIP's train_retrieval.evaluation: one query at a time, image tokens repeated k times."""
    sims = feats.sims(model)
    n_img, n_txt = sims.shape
    i2t = torch.full((n_img, n_txt), FILL)
    for i in range(n_img):
        top_sim, top = sims[i].topk(min(k, n_txt))
        kk = len(top)
        logits = model.itm_logits(feats.image_tokens[i : i + 1].repeat(kk, 1, 1), feats.text_ids[top], feats.text_atts[top])
        i2t[i, top] = (logits + top_sim).float()
    t2i = torch.full((n_txt, n_img), FILL)
    for t in range(n_txt):
        top_sim, top = sims[:, t].topk(min(k, n_img))
        kk = len(top)
        logits = model.itm_logits(feats.image_tokens[top], feats.text_ids[t : t + 1].repeat(kk, 1), feats.text_atts[t : t + 1].repeat(kk, 1))
        t2i[t, top] = (logits + top_sim).float()
    return i2t, t2i


def dense(per_dir, n_img=N_IMG, n_txt=N_TXT):
    rows, idx, sc = per_dir["i2t"]
    i2t = dense_scores(n_img, n_txt, rows, idx, sc)
    rows, idx, sc = per_dir["t2i"]
    return i2t, dense_scores(n_txt, n_img, rows, idx, sc)


def merged(model, feats, k, world, pairs):
    parts = [retrieval_scores(model, feats, k, rank=r, world=world, pairs_per_batch=pairs) for r in range(world)]
    out = {}
    for d in ("i2t", "t2i"):
        rows = [q for p in parts for q in p[d][0]]
        out[d] = (rows, torch.cat([p[d][1] for p in parts]), torch.cat([p[d][2] for p in parts]))
    return out


def tiny_blip_retrieval(tmp_path):
    from lavislite.common.config import model_type_config
    from lavislite.common.registry import registry
    from lavislite.models.tokenizer import init_tokenizer
    from tests.helpers.tasks import tokenizer_dir

    cls = registry.get_model_class("blip_retrieval")
    tok = init_tokenizer(tokenizer_dir(tmp_path / "vocab"))
    torch.manual_seed(0)
    cfg = model_type_config(cls, "tiny", {"med_overrides": {"vocab_size": len(tok)}})
    return cls.from_config(cfg.model, tokenizer=tok).eval()


@pytest.mark.parametrize("k", [1, 4, 15])
@pytest.mark.parametrize("pairs", [1, 8, 1000])
def test_batched_equals_per_query_toy(k, pairs):
    model = ToyRetrieval().eval()
    with torch.inference_mode():
        feats = features(model)
        ref_i2t, ref_t2i = reference(model, feats, k)
        i2t, t2i = dense(retrieval_scores(model, feats, k, pairs_per_batch=pairs))
    torch.testing.assert_close(i2t, ref_i2t)
    torch.testing.assert_close(t2i, ref_t2i)


@pytest.mark.parametrize("world", [2, 3, 8])
def test_query_shards_cover_everything_once(world):
    model = ToyRetrieval().eval()
    with torch.inference_mode():
        feats = features(model)
        single = dense(retrieval_scores(model, feats, 4, pairs_per_batch=8))
        split = dense(merged(model, feats, 4, world, 8))
    for a, b in zip(single, split):
        torch.testing.assert_close(a, b)
    for n in (0, 1, 7, 15):
        rows = [q for r in range(world) for q in query_shard(n, r, world)]
        assert rows == list(range(n))


def test_k_larger_than_candidates_is_clamped(caplog):
    model = ToyRetrieval().eval()
    with torch.inference_mode(), caplog.at_level(logging.WARNING, logger="lavislite.tasks.retrieval"):
        feats = features(model)
        i2t, t2i = dense(retrieval_scores(model, feats, 256))
        ref = reference(model, feats, 256)
    assert "k_test=256 exceeds" in caplog.text
    assert (i2t > FILL).all() and (t2i > FILL).all()  # every pair re-ranked
    torch.testing.assert_close(i2t, ref[0])
    torch.testing.assert_close(t2i, ref[1])


def test_batched_equals_per_query_tiny_blip(tmp_path):
    model = tiny_blip_retrieval(tmp_path)
    with torch.inference_mode():
        feats = features(model)
        ref_i2t, ref_t2i = reference(model, feats, 5)
        i2t, t2i = dense(merged(model, feats, 5, world=2, pairs=12))
    torch.testing.assert_close(i2t, ref_i2t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(t2i, ref_t2i, rtol=1e-5, atol=1e-5)
    assert ((i2t > FILL).sum(1) == 5).all() and ((t2i > FILL).sum(1) == 5).all()


class ToyMultiVector(ToyRetrieval):
    """Several ITC vectors per image (as BLIP-2's query vectors) with the max over them: the model owns its
    similarity, the task keeps the features opaque."""

    def encode_image(self, image: torch.Tensor):
        tokens, _ = super().encode_image(image)
        return tokens, torch.stack([self.proj_i(tokens[:, 0] * w) for w in (1.0, -1.0, 0.5)], dim=1)  # (B, 3, E)

    def itc_similarity(self, image_feats, text_feats):
        image = F.normalize(image_feats.float(), dim=-1)
        text = F.normalize(text_feats.float(), dim=-1)
        return torch.einsum("iqe,te->iqt", image, text).amax(1)


def test_the_model_owns_its_similarity():
    """A model with several vectors per image is ranked by its own itc_similarity, evaluation and search alike."""
    from lavislite.inference.inputs import Item
    from lavislite.inference.search import gallery_embeddings, search

    model = ToyMultiVector().eval()
    with torch.inference_mode():
        feats = features(model)
        assert feats.image_feats.shape[1:] == (3, 4)
        sims = feats.sims(model)
        ref_i2t, ref_t2i = reference(model, feats, 4)
        i2t, t2i = dense(retrieval_scores(model, feats, 4, pairs_per_batch=8))
        g = torch.Generator().manual_seed(0)
        gallery = {f"p{i}": torch.randn(3, 4, 4, generator=g) for i in range(6)}
        items = [Item(f"i{i}", f"p{i}") for i in range(6)]
        kept, emb, _ = gallery_embeddings(
            items, gallery.__getitem__, model.encode_image, key="image", batch_size=4, num_workers=0, skip_bad=False, quiet=True
        )
        found = search(model, ["a red square"], kept, emb, gallery.__getitem__, model.encode_image, top_k=3, rerank_k=0)
        one = model.itc_similarity(model.encode_image(torch.stack(list(gallery.values())))[1], model.encode_text(["a red square"])[0])
    torch.testing.assert_close(i2t, ref_i2t)
    torch.testing.assert_close(t2i, ref_t2i)
    first = F.normalize(feats.image_feats[:, 0].float(), dim=-1) @ F.normalize(feats.text_feats.float(), dim=-1).t()
    assert not torch.allclose(sims, first)  # the max over the vectors is not the first vector's cosine
    # the top-k candidates are the max-over-vectors ones
    assert torch.equal(i2t.topk(4, dim=1).indices.sort(1).values, sims.topk(4, dim=1).indices.sort(1).values)
    order = one[:, 0].argsort(descending=True)[:3].tolist()
    assert [r["id"] for r in found] == [f"i{i}" for i in order]
    assert [r["score"] for r in found] == pytest.approx(one[order, 0].tolist(), abs=1e-6)
