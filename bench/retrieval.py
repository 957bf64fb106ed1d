"""Benchmark: image-text retrieval evaluation (ITC top-k re-ranked by ITM, both directions), lavislite's
batched re-ranking (``lavislite.tasks.retrieval.retrieval_scores``) vs BLIP's per-query loop.

A full-size ``blip_retrieval`` model (COCO architecture, ViT-B/16 @ 384, random weights) encodes
``--images`` random images and ``--texts`` random captions once (timed, shared by both sides: BLIP's
evaluation encodes them the same way). Then both sides re-rank the top ``--k`` in both directions:

* peer: ``train_retrieval.evaluation``'s loop written out here: one query per ITM call, image -> text
  repeats the image's tokens k times, text -> image gathers the k images and repeats the text k times;
* lavislite: ``retrieval_scores`` (lavislite/tasks/rerank.py): both directions' pairs pooled (a pair in
  both top-k lists scored once) and grouped by image, each image's texts in one grouped ITM call on its
  un-repeated tokens (cross-attention K/V projected once per image, not once per pair), padding columns
  no text of the call uses dropped.

Rankings (argsort of each row of both score matrices) must be identical; the largest score difference is
reported. The peer's cost per pair does not depend on the split size, but lavislite's does (texts per
image amortise the image's K/V; the overlap of the two directions' pairs): a scaled-down run should keep
``k/images`` and ``k/texts`` (e.g. 16 x 80 with k=4 for 64 x 320 with k=16); it then has 4x fewer texts
per image than the full size, so its ratio is a lower bound of the full-size one.

    python bench/retrieval.py [--images 64 --texts 320 --k 16] [--repeats 1] [--warmup 0] [--bf16] [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def build_model(tmp: Path, quick: bool, device: torch.device):
    from lavislite.api import load_model

    C.synthetic_tokenizer(tmp / "vocab")
    over = {"tokenizer": str(tmp / "vocab"), "load_finetuned": False, "load_pretrained": False}
    if quick:
        over.update(image_size=64, vit_ckpt_layer=0, vit_overrides={"embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0},
                    med_overrides={"hidden_size": 64, "encoder_width": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                   "num_attention_heads": 4})
    torch.manual_seed(0)
    return load_model("blip_retrieval", "coco", device=device, **over)


def per_query_loop(model, feats, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BLIP's evaluation loop: one query per ITM call, the query repeated k times (dense -100-filled matrices)."""
    sims = feats.sims(model)
    i2t = torch.full(sims.shape, -100.0)
    for i in range(sims.shape[0]):
        top_sim, top = sims[i].topk(k)
        enc = feats.image_tokens[i].repeat(k, 1, 1)
        i2t[i, top] = (model.itm_logits(enc, feats.text_ids[top], feats.text_atts[top]).float() + top_sim).cpu()
    t2i = torch.full(sims.t().shape, -100.0)
    for j in range(sims.shape[1]):
        top_sim, top = sims[:, j].topk(k)
        enc = feats.image_tokens[top]
        t2i[j, top] = (model.itm_logits(enc, feats.text_ids[j].repeat(k, 1), feats.text_atts[j].repeat(k, 1)).float() + top_sim).cpu()
    return i2t, t2i


def batched(model, feats, k: int, pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    from lavislite.tasks.retrieval import dense_scores, retrieval_scores

    out = retrieval_scores(model, feats, k, pairs_per_batch=pairs)
    n_img, n_txt = feats.image_tokens.shape[0], feats.text_ids.shape[0]
    rows, idx, sc = out["i2t"]
    i2t = dense_scores(n_img, n_txt, rows, idx, sc)
    rows, idx, sc = out["t2i"]
    return i2t, dense_scores(n_txt, n_img, rows, idx, sc)


def same_rankings(a: torch.Tensor, b: torch.Tensor, k: int) -> bool:
    """Identical top-k order in every row (entries outside the top-k are all -100 on both sides)."""
    ra = np.argsort(-a.numpy(), axis=1, kind="stable")[:, :k]
    rb = np.argsort(-b.numpy(), axis=1, kind="stable")[:, :k]
    return bool(np.array_equal(ra, rb))


def unique_pairs(i2t: torch.Tensor, t2i: torch.Tensor) -> int:
    """Distinct (image, text) pairs re-ranked in either direction (what lavislite scores)."""
    return int(((i2t > -100) | (t2i.t() > -100)).sum())


def bf16_copy(model, device: torch.device):
    """A bf16 copy of ``model`` (what ``load_model(..., dtype="bf16")`` places)."""
    import copy

    from lavislite.api import _place

    return _place(copy.deepcopy(model), True, device, "bf16")


def bf16_row(t: dict, k: int, pi2t: torch.Tensor, pt2i: torch.Tensor, device: torch.device) -> dict:
    """lavislite bf16 re-ranking (fp32 ITC candidates, bf16 ITM) vs the fp32 per-query loop."""
    bi2t, bt2i = t["lavislite_bf16"]["output"]
    return {
        "peer": "BLIP per-query loop, fp32",
        "peer_time": C.side(t["peer"]),
        "lavislite_time": C.side(t["lavislite_bf16"]),
        "ratio": round(t["peer"]["median_s"] / t["lavislite_bf16"]["median_s"], 2),
        "identical_rankings": same_rankings(bi2t, pi2t, k) and same_rankings(bt2i, pt2i, k),
        "top1_agreement": round(
            float(((bi2t.argmax(1) == pi2t.argmax(1)).float().mean() + (bt2i.argmax(1) == pt2i.argmax(1)).float().mean()) / 2), 4
        ),
        "max_abs_score_diff": float(max((bi2t - pi2t).abs().max(), (bt2i - pt2i).abs().max())),
        "memory_how": C.memory_how(device),
    }


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__, repeats=1)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--texts", type=int, default=320)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--pairs-per-batch", type=int, default=1024, help="run.itm_pairs_per_batch of the task")
    p.add_argument("--image-batch", type=int, default=16)
    p.add_argument("--bf16", action="store_true", help="extra row: lavislite in bf16 (same candidates) vs the fp32 loop")
    args = p.parse_args(argv)
    device = C.setup(args)
    if args.quick:
        args.images, args.texts, args.k = 8, 40, 4
    from lavislite.tasks.retrieval import RetrievalFeatures, encode_texts

    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        model = build_model(Path(tmp), args.quick, device)
        size = model.visual_encoder.patch_embed.img_size[0]
        images = torch.randn(args.images, 3, size, size, generator=torch.Generator().manual_seed(1))
        texts = C.random_words(args.texts, seed=2)

        def encode():
            t_emb, ids, atts = encode_texts(model, texts, batch_size=256, max_length=35)
            toks, embs = [], []
            for s in range(0, args.images, args.image_batch):
                tok, proj = model.encode_image(images[s : s + args.image_batch].to(device))
                toks.append(tok)
                embs.append(F.normalize(proj.float(), dim=-1))
            return RetrievalFeatures(torch.cat(toks), torch.cat(embs), ids.to(device), atts.to(device), t_emb.to(device))

        feats, t_encode = C.timed_once(encode, device)
        sides = {"peer": lambda: per_query_loop(model, feats, args.k), "lavislite": lambda: batched(model, feats, args.k, args.pairs_per_batch)}
        if args.bf16:
            m16 = bf16_copy(model, device)
            f16 = RetrievalFeatures(feats.image_tokens.bfloat16(), feats.image_feats, feats.text_ids, feats.text_atts, feats.text_feats)
            sides["lavislite_bf16"] = lambda: batched(m16, f16, args.k, args.pairs_per_batch)
        t = C.interleaved(sides, args.repeats, args.warmup, device)
        (pi2t, pt2i), (oi2t, ot2i) = t["peer"]["output"], t["lavislite"]["output"]
        itm_calls_peer = args.images + args.texts
        result = {
            "model": f"blip_retrieval coco architecture, ViT-B/16 @ {size}px, random weights, fp32",
            "images": args.images,
            "texts": args.texts,
            "k": args.k,
            "pairs_per_batch": args.pairs_per_batch,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "quick": args.quick,
            "encode_s": round(t_encode, 3),
            "runs": {
                "rerank": {
                    "peer": "BLIP per-query loop (written in bench/retrieval.py)",
                    "peer_time": C.side(t["peer"]),
                    "lavislite_time": C.side(t["lavislite"]),
                    "ratio": round(t["peer"]["median_s"] / t["lavislite"]["median_s"], 2),
                    "identical_rankings": same_rankings(oi2t, pi2t, args.k) and same_rankings(ot2i, pt2i, args.k),
                    "max_abs_score_diff": float(max((oi2t - pi2t).abs().max(), (ot2i - pt2i).abs().max())),
                    "itm_pairs": args.k * itm_calls_peer,
                    "peer_itm_calls": itm_calls_peer,
                    "lavislite_unique_pairs": unique_pairs(pi2t, pt2i),
                    "memory_how": C.memory_how(device),
                },
                **({"rerank_bf16": bf16_row(t, args.k, pi2t, pt2i, device)} if args.bf16 else {}),
                "evaluation": {
                    "peer": "encode + per-query loop",
                    "peer_time": {"median_s": round(t_encode + t["peer"]["median_s"], 3)},
                    "lavislite_time": {"median_s": round(t_encode + t["lavislite"]["median_s"], 3)},
                    "ratio": round((t_encode + t["peer"]["median_s"]) / (t_encode + t["lavislite"]["median_s"]), 2),
                    "note": "the shared encoding (timed once) added to both sides",
                },
            },
        }
    C.write("retrieval", result, args.out)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
