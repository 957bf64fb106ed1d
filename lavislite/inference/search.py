"""Text -> image/video search over a gallery of files: ITC ranking, then ITM re-ranking of the best.

BLIP's procedure (``lavislite.tasks.retrieval``) for a handful of queries over a folder: the gallery's
normalised ITC embeddings are computed once in batches (only the embeddings are kept, so the gallery may be
large); each query's top ``rerank_k`` items by cosine are re-read, encoded again for their tokens and scored
by the ITM head; the final score is ``itm logit + cosine`` (BLIP's), or the cosine without re-ranking.
A video is its frames seen by the image model (mean of the frames' projections; frame tokens concatenated
for ITM), as in :mod:`lavislite.tasks.video_retrieval`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lavislite.common.errors import ConfigError, DataError
from lavislite.inference.data import ItemsDataset
from lavislite.inference.inputs import Item
from lavislite.inference.runner import RunStats, run_batches

logger = logging.getLogger(__name__)

Encode = Callable[[Tensor], "tuple[Tensor, Tensor]"]  # batch -> (tokens (B, N, D), unnormalised proj (B, E))


def gallery_embeddings(items: Sequence[Item], load: Callable[[str], Tensor], encode: Encode, *, key: str, batch_size: int,
                       num_workers: int, skip_bad: bool, quiet: bool) -> tuple[list[Item], Tensor, RunStats]:
    """``(readable items, their normalised ITC embeddings (n, E) on the CPU, stats)``."""
    kept: list[Item] = []
    embeds: list[Tensor] = []

    def fn(batch: dict) -> list[dict]:
        _, proj = encode(batch[key])
        embeds.append(F.normalize(proj.float(), dim=-1).cpu())
        kept.extend(Item(i, p) for i, p in zip(batch["id"], batch["path"]))
        return []

    stats = run_batches(ItemsDataset(items, load, key), fn, lambda recs: None, batch_size=batch_size, num_workers=num_workers,
                        skip_bad=skip_bad, desc="encode gallery", total=len(items), show_progress=not quiet)
    if not kept:
        raise DataError("no readable gallery items: every input failed to load")
    return kept, torch.cat(embeds), stats


@torch.inference_mode()
def search(
    model: Any,
    queries: Sequence[str],
    items: Sequence[Item],
    embeds: Tensor,
    load: Callable[[str], Tensor],
    encode: Encode,
    *,
    top_k: int = 5,
    rerank_k: int = 0,
    batch_size: int = 8,
    max_length: int = 35,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Records ``{query, rank, id, score, itc[, itm]}``: each query's best ``top_k`` items (``query`` is
    ``names[q]`` when given, e.g. the text as typed before cleaning)."""
    if top_k < 1:
        raise ConfigError(f"--top-k {top_k}: use an integer >= 1")
    text_proj, ids, atts = model.encode_text(list(queries), max_length=max_length)
    sims = F.normalize(text_proj.float(), dim=-1).cpu() @ embeds.t()  # (Q, n)
    n = sims.shape[1]
    k = min(top_k, n)
    pool = min(max(rerank_k, k), n) if rerank_k > 0 else k
    top_sim, top_idx = sims.topk(pool, dim=1)
    itm = None
    if rerank_k > 0:
        itm = _itm_scores(model, items, top_idx, ids, atts, load, encode, batch_size)
    records = []
    names = list(names) if names is not None else list(queries)
    for q, query in enumerate(names):
        score = top_sim[q] + (itm[q] if itm is not None else 0)
        order = score.argsort(descending=True)[:k]
        for rank, j in enumerate(order.tolist(), 1):
            rec = {"query": query, "rank": rank, "id": items[int(top_idx[q, j])].id, "score": float(score[j]),
                   "itc": float(top_sim[q, j])}
            if itm is not None:
                rec["itm"] = float(itm[q, j])
            records.append(rec)
    return records


def _itm_scores(model: Any, items: Sequence[Item], top_idx: Tensor, ids: Tensor, atts: Tensor, load: Callable,
                encode: Encode, batch_size: int) -> Tensor:
    """ITM logits (Q, pool) of each query with its candidates; each candidate is read and encoded once."""
    cands = sorted(set(top_idx.reshape(-1).tolist()))
    tokens: dict[int, Tensor] = {}
    for s in range(0, len(cands), batch_size):
        chunk = cands[s : s + batch_size]
        tok, _ = encode(torch.stack([load(items[c].path) for c in chunk]))
        for c, t in zip(chunk, tok):
            tokens[c] = t
    q_n, pool = top_idx.shape
    out = torch.empty(q_n, pool)
    for q in range(q_n):
        for s in range(0, pool, batch_size):
            cols = top_idx[q, s : s + batch_size].tolist()
            img = torch.stack([tokens[c] for c in cols])
            r = len(cols)
            out[q, s : s + r] = model.itm_logits(img, ids[q : q + 1].expand(r, -1), atts[q : q + 1].expand(r, -1)).float().cpu()
    return out
