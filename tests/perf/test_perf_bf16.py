"""bf16 inference mode (``load_model(..., dtype="bf16")`` / ``api._place``) vs fp32 on the same weights.

Stated tolerances (tiny models, CPU):

* image tokens and teacher-forced decoder logits: max |bf16 - fp32| <= 5% of the fp32 values' max |.|
  (bf16 keeps 8 mantissa bits: ~0.4% per rounding, a few roundings deep);
* a caption model trained to memorise 4 captions: greedy and beam-3 captions identical in bf16 and fp32;
* ITM re-ranking: scores within 0.05 (logit units) and the same top-1 candidate per query.

Also covered: bf16 models take the fp32 images the processors produce (the ViT casts them).
"""

import random

import pytest
import torch

from lavislite.api import _place
from lavislite.common.config import model_type_config
from lavislite.common.registry import registry

CAPTIONS = [
    "a picture of a red circle on the left",
    "a picture of two small blue squares",
    "a picture of a big green triangle above a yellow star",
    "a picture of a woman sitting on the beach with her dog",
]
WORDS = sorted({w for c in CAPTIONS for w in c.split()})


@pytest.fixture(scope="module")
def perf_tok(tmp_path_factory):
    from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer

    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=8)) for _ in range(300)] + CAPTIONS
    out = tmp_path_factory.mktemp("perf_vocab")
    build_wordpiece_vocab(texts, 120, out)
    return init_tokenizer(out)


def tiny(arch, tok, seed=0):
    cls = registry.get_model_class(arch)
    cfg = model_type_config(cls, "tiny", {"med_overrides": {"vocab_size": len(tok)}})
    torch.manual_seed(seed)
    return cls.from_config(cfg.model, tokenizer=tok).eval()


def bf16_copy(model):
    import copy

    return _place(copy.deepcopy(model), True, "cpu", "bf16")


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def trained_captioner(perf_tok, images):
    """A tiny captioner trained until it reproduces its 4 captions (a peaked, trained-like distribution)."""
    model = tiny("blip_caption", perf_tok).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    samples = {"image": images, "text_input": CAPTIONS}
    target = [c[len("a picture of "):] for c in CAPTIONS]
    for step in range(1, 241):  # train until memorised (how many steps varies with BLAS threading)
        loss = model(samples).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 60 and step % 20 == 0:
            model.eval()
            done = model.generate({"image": images}, num_beams=1, max_length=20, min_length=1) == target
            model.train()
            if done:
                break
    return model.eval().requires_grad_(False)


def _close(a, b, rel=0.05):
    scale = a.float().abs().max()
    return float((a.float() - b.float()).abs().max()) <= rel * float(scale)


def test_bf16_places_every_parameter_and_accepts_fp32_images(perf_tok, images):
    model = tiny("blip_caption", perf_tok)
    m16 = bf16_copy(model)
    assert {p.dtype for p in m16.parameters()} == {torch.bfloat16}
    with torch.inference_mode():
        tokens = m16.forward_encoder({"image": images})  # fp32 images in
        ref = model.forward_encoder({"image": images})
    assert tokens.dtype == torch.bfloat16
    assert _close(ref, tokens)


def test_bf16_teacher_forced_logits_within_tolerance(trained_captioner, images):
    m16 = bf16_copy(trained_captioner)
    samples = {"image": images, "text_input": CAPTIONS}
    with torch.inference_mode():
        out32, _ = trained_captioner.forward_decoder(samples, trained_captioner.forward_encoder(samples))
        out16, _ = m16.forward_decoder(samples, m16.forward_encoder(samples))
    assert _close(out32.logits, out16.logits)
    # Top-1 must agree wherever fp32's margin exceeds bf16's stated error bound (near-ties, e.g. at padding
    # positions, may flip legitimately); the trained caption tokens all have such margins.
    top2 = out32.logits.float().topk(2, dim=-1).values
    decided = (top2[..., 0] - top2[..., 1]) > 0.1 * float(out32.logits.abs().max())
    assert decided.sum() >= sum(len(c.split()) for c in CAPTIONS) // 2
    assert torch.equal(out32.logits.argmax(-1)[decided], out16.logits.argmax(-1)[decided])


@pytest.mark.parametrize("num_beams", [1, 3])
def test_bf16_captions_identical_on_trained_model(trained_captioner, images, num_beams):
    m16 = bf16_copy(trained_captioner)
    kw = dict(num_beams=num_beams, max_length=20, min_length=5)
    caps32 = trained_captioner.generate({"image": images}, **kw)
    caps16 = m16.generate({"image": images}, **kw)
    assert caps32 == [c[len("a picture of "):] for c in CAPTIONS]  # the model did memorise them
    assert caps16 == caps32


def test_bf16_itm_rerank_within_tolerance(perf_tok, images):
    from lavislite.tasks.retrieval import (
        RetrievalFeatures,
        encode_texts,
        retrieval_scores,
    )

    model = tiny("blip_retrieval", perf_tok)
    m16 = bf16_copy(model)

    def feats(m):
        t_emb, ids, atts = encode_texts(m, CAPTIONS * 2, max_length=20)
        tok, proj = m.encode_image(images)
        return RetrievalFeatures(tok, torch.nn.functional.normalize(proj.float(), dim=-1), ids, atts, t_emb)

    with torch.inference_mode():
        f32, f16 = feats(model), feats(m16)
        assert float((f32.sims(model) - f16.sims(m16)).abs().max()) < 0.05
        s32 = retrieval_scores(model, f32, 3, pairs_per_batch=6)
        # re-rank the same candidates (fp32 ITC top-k) with the bf16 ITM head: only the ITM logits differ
        s16 = retrieval_scores(m16, RetrievalFeatures(f16.image_tokens, f32.image_feats, f32.text_ids, f32.text_atts,
                                                      f32.text_feats), 3, pairs_per_batch=6)
    for d in ("i2t", "t2i"):
        (_, i32, v32), (_, i16, v16) = s32[d], s16[d]
        assert torch.equal(i32, i16)
        assert float((v32 - v16).abs().max()) < 0.05
        best32 = i32.gather(1, v32.argmax(1, keepdim=True))
        best16 = i16.gather(1, v16.argmax(1, keepdim=True))
        gap = (v32.topk(2, dim=1).values[:, 0] - v32.topk(2, dim=1).values[:, 1])
        clear = gap > 0.1  # near-ties may swap within the tolerance
        assert torch.equal(best32[clear], best16[clear])
