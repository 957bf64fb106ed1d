"""Text -> image/video search over a gallery of files: ITC ranking, then ITM re-ranking of the best.

BLIP's procedure (``lavislite.tasks.retrieval``) for a handful of queries over a folder, through the
:class:`~lavislite.models.protocols.RetrievalModel` contract: the gallery's ITC features are computed once
in batches (only the features are kept, so the gallery may be large); ``model.itc_similarity`` ranks the
gallery for each query; each query's top ``rerank_k`` items are re-read, encoded again for their tokens and
scored by the ITM re-ranking evaluation uses (:mod:`lavislite.tasks.rerank`); the final score is
``itm logit + similarity`` (BLIP's), or the similarity without re-ranking. A video is its frames seen by
the image model (mean of the frames' features; frame tokens concatenated for ITM), as in the
``video_retrieval`` configuration of :mod:`lavislite.tasks.retrieval`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from lavislite.common.errors import ConfigError, DataError
from lavislite.inference.batch_loop import RunStats, run_batches
from lavislite.inference.data import ItemsDataset
from lavislite.inference.inputs import Item
from lavislite.tasks.rerank import rerank_score, rerank_text_queries, top_candidates

logger = logging.getLogger(__name__)

Encode = Callable[[Tensor], "tuple[Tensor, Tensor]"]  # batch -> (tokens (B, N, D), ITC features (B, ...))


def gallery_embeddings(items: Sequence[Item], load: Callable[[str], Tensor], encode: Encode, *, key: str, batch_size: int,
                       num_workers: int, skip_bad: bool, quiet: bool) -> tuple[list[Item], Tensor, RunStats]:
    """``(readable items, their ITC features (n, ...) float32 on the CPU, stats)``."""
    kept: list[Item] = []
    embeds: list[Tensor] = []

    def fn(batch: dict) -> list[dict]:
        _, feats = encode(batch[key])
        embeds.append(feats.float().cpu())
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
    ``names[q]`` when given, e.g. the text as typed before cleaning). ``embeds``: the gallery's ITC features
    from :func:`gallery_embeddings`."""
    if top_k < 1:
        raise ConfigError(f"--top-k {top_k}: use an integer >= 1")
    text_feats, ids, atts = model.encode_text(list(queries), max_length=max_length)
    sims = model.itc_similarity(embeds, text_feats.float().cpu()).t().cpu()  # (Q, n)
    n = sims.shape[1]
    k = min(top_k, n)
    pool = min(max(rerank_k, k), n) if rerank_k > 0 else k
    top_idx, top_sim = top_candidates(sims, range(len(queries)), pool)
    itm = None
    if rerank_k > 0:
        itm = rerank_text_queries(model, top_idx, ids, atts, lambda idx: _tokens(items, idx, load, encode, batch_size), batch_size)
    records = []
    names = list(names) if names is not None else list(queries)
    for q, query in enumerate(names):
        score = rerank_score(itm[q], top_sim[q]) if itm is not None else top_sim[q]
        order = score.argsort(descending=True)[:k]
        for rank, j in enumerate(order.tolist(), 1):
            rec = {"query": query, "rank": rank, "id": items[int(top_idx[q, j])].id, "score": float(score[j]),
                   "itc": float(top_sim[q, j])}
            if itm is not None:
                rec["itm"] = float(itm[q, j])
            records.append(rec)
    return records


def _tokens(items: Sequence[Item], idx: list[int], load: Callable, encode: Encode, batch_size: int) -> Tensor:
    """The visual tokens (len(idx), N, D) of the gallery items ``idx``, read and encoded ``batch_size`` at a time."""
    parts = [encode(torch.stack([load(items[c].path) for c in idx[s : s + batch_size]]))[0] for s in range(0, len(idx), batch_size)]
    return torch.cat(parts)
