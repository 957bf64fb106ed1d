"""ITM re-ranking, the one implementation behind retrieval evaluation (images and videos) and
``lavislite retrieve`` / ``lavislite video-retrieve``.

BLIP re-ranks each query's top-``k`` candidates by ITC similarity with the ITM head: score = ITM logit +
ITC similarity (:func:`rerank_score`). BLIP's loop scores one query per ITM call with the query repeated
``k`` times, so every (text, image) pair re-projects the image's tokens to cross-attention K/V in every
layer (for a 384 px image ~16 GFLOP per pair, twice the text's own work). Here:

* :func:`itm_pair_logits` scores a list of (visual candidate, text) pairs grouped by the visual side:
  each visual input goes through one grouped ``itm_logits`` call with all its texts (chunked to
  ``max_pairs``), so its K/V are projected once per call; a pair listed twice (e.g. re-ranked in both
  directions) is scored once; trailing padding columns masked out in every text of a call are dropped
  (masked keys get exactly zero attention weight, so the scores are unchanged up to float rounding);
* :func:`rerank_both_directions`: both directions' top-k pairs pooled and scored by it (evaluation);
* :func:`rerank_text_queries`: text queries against a gallery whose candidates' tokens are computed on
  demand (search);
* :func:`chunk_candidates`: a query-batched ITM callable split so one call scores at most ``max_pairs``.

The model is a :class:`lavislite.models.protocols.RetrievalModel`: ``itm_logits(tokens (b, N, D), ids (b*r, L),
atts (b*r, L))`` with ``r`` texts per visual input, grouped contiguously.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from lavislite.common import dist
from lavislite.common.logging import progress

ItmFn = Callable[[Tensor, Tensor], Tensor]  # (query idx (q,), candidate idx (q,k)) -> ITM logits (q*k,)


def rerank_score(itm_logits: Tensor, itc: Tensor) -> Tensor:
    """BLIP's score of a re-ranked pair: the ITM match logit plus the ITC similarity."""
    return itm_logits + itc


def top_candidates(sims: Tensor, rows: Sequence[int], k: int) -> tuple[Tensor, Tensor]:
    """``(indices (len(rows), k), similarities (len(rows), k))`` of each query row's top ``k`` by ``sims``, on the CPU."""
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
    model: Any, tokens: Tensor, text_ids: Tensor, text_atts: Tensor, cand: Tensor, text: Tensor, max_pairs: int,
    desc: str = "", device: torch.device | None = None,
) -> Tensor:
    """ITM logits (P,) float32 on the CPU of the pairs ``(tokens[cand[p]], text[p])``.

    Pairs are grouped by visual candidate: each candidate's distinct texts go through ``model.itm_logits``
    with its tokens once, at most ``max_pairs`` texts per call (texts sorted by length so each call drops
    the padding it does not need). Duplicate pairs are scored once. ``device``: where the inputs of each
    call go (tokens kept in host memory are moved one candidate at a time); default: where they are.
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
        visual = tokens[c : c + 1] if device is None else tokens[c : c + 1].to(device, non_blocking=True)
        for s in range(start, start + n, step):
            e = min(s + step, start + n)
            t = u_text[s:e].to(text_ids.device)
            ids, atts = trim_padding(text_ids[t], text_atts[t])
            if device is not None:
                ids, atts = ids.to(device), atts.to(device)
            logits[order[s:e]] = model.itm_logits(visual, ids, atts).float().cpu()
        start += n
    out[:] = logits[inverse]
    return out


def rerank_both_directions(
    sims: Tensor, feats: Any, model: Any, rows_v: Sequence[int], k_v: int, rows_t: Sequence[int], k_t: int, pairs_per_batch: int,
    desc: str = "", device: torch.device | None = None,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Visual -> text and text -> visual re-ranking in one pass.

    ``sims`` is visual x text; ``rows_v`` (``rows_t``) are the visual (text) query rows, each re-ranking its
    top ``k_v`` texts (``k_t`` visual candidates). All pairs are pooled and scored by :func:`itm_pair_logits`
    (grouped by visual candidate, a pair in both lists once). ``feats`` has ``image_tokens``, ``text_ids``,
    ``text_atts``. Returns ``((v2t indices, v2t scores), (t2v indices, t2v scores))``, scores =
    :func:`rerank_score`, all (rows, k) on the CPU.
    """
    v2t_idx, v2t_sim = top_candidates(sims, rows_v, k_v)
    t2v_idx, t2v_sim = top_candidates(sims.t(), rows_t, k_t)
    visual = torch.cat([torch.as_tensor(list(rows_v), dtype=torch.long).repeat_interleave(k_v), t2v_idx.reshape(-1)])
    texts = torch.cat([v2t_idx.reshape(-1), torch.as_tensor(list(rows_t), dtype=torch.long).repeat_interleave(k_t)])
    logits = itm_pair_logits(model, feats.image_tokens, feats.text_ids, feats.text_atts, visual, texts, pairs_per_batch, desc, device)
    n = len(rows_v) * k_v
    return (
        (v2t_idx, rerank_score(logits[:n].view(len(rows_v), k_v), v2t_sim)),
        (t2v_idx, rerank_score(logits[n:].view(len(rows_t), k_t), t2v_sim)),
    )


def rerank_text_queries(
    model: Any, top_idx: Tensor, text_ids: Tensor, text_atts: Tensor, tokens_of: Callable[[list[int]], Tensor], pairs_per_batch: int,
) -> Tensor:
    """ITM logits (Q, k) of each text query ``q`` with its candidates ``top_idx[q]`` (gallery indices).

    ``tokens_of(indices)`` returns the visual tokens (len, N, D) of those gallery items; each distinct
    candidate is asked for once, so a gallery need not keep its tokens. Scored by :func:`itm_pair_logits`.
    """
    q_n, k = top_idx.shape
    cands = sorted(set(top_idx.reshape(-1).tolist()))
    if not cands:
        return torch.empty(q_n, k)
    tokens = tokens_of(cands)
    local = {c: i for i, c in enumerate(cands)}
    cand = torch.tensor([local[c] for c in top_idx.reshape(-1).tolist()], dtype=torch.long)
    queries = torch.arange(q_n).repeat_interleave(k)
    return itm_pair_logits(model, tokens, text_ids, text_atts, cand, queries, pairs_per_batch).view(q_n, k)


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
