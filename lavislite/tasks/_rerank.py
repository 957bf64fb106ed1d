"""ITM re-ranking helpers shared by the image and video retrieval tasks (one implementation for both).

BLIP re-ranks each query's top-``k`` candidates by ITC cosine with the ITM head: score = ITM logit +
cosine (BLIP_FACTS §3.3). BLIP's loop scores one query per ITM call with the query repeated ``k`` times,
so every (text, image) pair re-projects the image's tokens to cross-attention K/V in every layer (for a
384 px image ~16 GFLOP per pair, twice the text's own work). Here:

* :func:`itm_pair_logits` scores a list of (visual candidate, text) pairs grouped by the visual side:
  each visual input goes through one grouped ``itm_logits`` call with all its texts (chunked to
  ``max_pairs``), so its K/V are projected once per call; a pair listed twice (e.g. re-ranked in both
  directions) is scored once; trailing padding columns masked out in every text of a call are dropped
  (masked keys get exactly zero attention weight, so the scores are unchanged up to float rounding);
* :func:`rerank_both_directions`: both directions' top-k pairs pooled and scored by it;
* :func:`chunk_candidates`: a query-batched ITM callable split so one call scores at most ``max_pairs``.

A "model" here is anything with the retrieval protocol's ``itm_logits(tokens (b, N, D), ids (b*r, L),
atts (b*r, L))`` (``r`` texts per visual input, grouped contiguously).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from lavislite.common import dist
from lavislite.common.logging import progress

ItmFn = Callable[[Tensor, Tensor], Tensor]  # (query idx (q,), candidate idx (q,k)) -> ITM logits (q*k,)


def top_candidates(sims: Tensor, rows: Sequence[int], k: int) -> tuple[Tensor, Tensor]:
    """``(indices (len(rows), k), cosines (len(rows), k))`` of each query row's top ``k`` by ``sims``, on the CPU."""
    rows_t = torch.as_tensor(list(rows), dtype=torch.long)
    if len(rows_t) == 0:
        return torch.empty((0, k), dtype=torch.long), torch.empty((0, k))
    top_sim, top_idx = sims[rows_t.to(sims.device)].topk(k, dim=1)
    return top_idx.cpu(), top_sim.float().cpu()


def trim_padding(ids: Tensor, atts: Tensor) -> tuple[Tensor, Tensor]:
    """``ids``/``atts`` without the trailing columns that are masked out in every row."""
    used = atts.bool().any(0)
    n = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
    return (ids[:, :n], atts[:, :n]) if n < ids.shape[1] else (ids, atts)


def itm_pair_logits(
    model: Any, tokens: Tensor, text_ids: Tensor, text_atts: Tensor, cand: Tensor, text: Tensor, max_pairs: int, desc: str = ""
) -> Tensor:
    """ITM logits (P,) float32 on the CPU of the pairs ``(tokens[cand[p]], text[p])``.

    Pairs are grouped by visual candidate: each candidate's distinct texts go through ``model.itm_logits``
    with its tokens once, at most ``max_pairs`` texts per call (texts sorted by length so each call drops
    the padding it does not need). Duplicate pairs are scored once.
    """
    cand, text = cand.reshape(-1).cpu().long(), text.reshape(-1).cpu().long()
    out = torch.empty(len(cand))
    if len(cand) == 0:
        return out
    n_txt = int(text_ids.shape[0])
    uniq, inverse = torch.unique(cand * n_txt + text, return_inverse=True)  # sorted by candidate
    u_cand, u_text = uniq // n_txt, uniq % n_txt
    lengths = text_atts.bool().flip(1).int().argmax(1).neg().add(text_atts.shape[1]).cpu()  # last unmasked + 1
    # within a candidate, shortest texts first (a stable sort keeps the candidate order)
    order = torch.argsort(lengths[u_text], stable=True)
    order = order[torch.argsort(u_cand[order], stable=True)]
    u_cand, u_text = u_cand[order], u_text[order]
    cands, counts = torch.unique_consecutive(u_cand, return_counts=True)
    logits = torch.empty(len(uniq))
    step = max(1, int(max_pairs))
    start = 0
    for c, n in progress(list(zip(cands.tolist(), counts.tolist())), desc=desc, enabled=dist.is_main_process() and bool(desc)):
        for s in range(start, start + n, step):
            e = min(s + step, start + n)
            t = u_text[s:e].to(text_ids.device)
            ids, atts = trim_padding(text_ids[t], text_atts[t])
            logits[order[s:e]] = model.itm_logits(tokens[c : c + 1], ids, atts).float().cpu()
        start += n
    out[:] = logits[inverse]
    return out


def rerank_both_directions(
    sims: Tensor, feats: Any, model: Any, rows_v: Sequence[int], k_v: int, rows_t: Sequence[int], k_t: int, pairs_per_batch: int,
    desc: str = "",
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Visual -> text and text -> visual re-ranking in one pass.

    ``sims`` is visual x text; ``rows_v`` (``rows_t``) are the visual (text) query rows, each re-ranking its
    top ``k_v`` texts (``k_t`` visual candidates). All pairs are pooled and scored by :func:`itm_pair_logits`
    (grouped by visual candidate, a pair in both lists once). ``feats`` has ``image_tokens``, ``text_ids``,
    ``text_atts``. Returns ``((v2t indices, v2t scores), (t2v indices, t2v scores))``, scores = ITM logit +
    cosine, all (rows, k) on the CPU.
    """
    v2t_idx, v2t_sim = top_candidates(sims, rows_v, k_v)
    t2v_idx, t2v_sim = top_candidates(sims.t(), rows_t, k_t)
    visual = torch.cat([torch.as_tensor(list(rows_v), dtype=torch.long).repeat_interleave(k_v), t2v_idx.reshape(-1)])
    texts = torch.cat([v2t_idx.reshape(-1), torch.as_tensor(list(rows_t), dtype=torch.long).repeat_interleave(k_t)])
    logits = itm_pair_logits(model, feats.image_tokens, feats.text_ids, feats.text_atts, visual, texts, pairs_per_batch, desc)
    n = len(rows_v) * k_v
    return (
        (v2t_idx, logits[:n].view(len(rows_v), k_v) + v2t_sim),
        (t2v_idx, logits[n:].view(len(rows_t), k_t) + t2v_sim),
    )


def chunk_candidates(fn: ItmFn, max_pairs: int) -> ItmFn:
    """``fn`` applied to column chunks of the candidates so one call scores at most ``max_pairs`` pairs
    (at least one candidate per query); results are identical to one call, up to float rounding."""
    max_pairs = max(1, int(max_pairs))

    def wrapped(q: Tensor, cand: Tensor) -> Tensor:
        nq, k = cand.shape
        if nq * k <= max_pairs:
            return fn(q, cand)
        step = max(1, max_pairs // nq)
        parts = [fn(q, cand[:, s : s + step]).view(nq, -1) for s in range(0, k, step)]
        return torch.cat(parts, dim=1).reshape(-1)

    return wrapped
