"""Image/video-text retrieval recall, as BLIP's ``itm_eval`` computes it, vectorised.

* Text retrieval (image -> texts): a query's rank is the best rank among its ground-truth texts (COCO and
  Flickr have 5 per image).
* Image retrieval (text -> images): the rank of the text's image; several ground-truth images per text
  are allowed (best rank again), which BLIP never needs but synthetic data can.
* R@K = 100 · fraction of queries with rank < K; ``*_r_mean`` = mean of R@1/5/10; ``r_mean`` = mean of the
  two; median and mean rank are of ``rank + 1`` (BLIP's video ``vid_mdR = median(ranks + 1)``).

Ties (``ties=``; ``run.tie_rule`` in the retrieval tasks). Ties arise in BLIP's −100 fill outside the
re-ranked top k: beyond R@10 at BLIP's k_test (128/256), but not at a small k.

* ``"blip"``: BLIP's own ``np.argsort(score)[::-1]``, its sort made stable so the order is defined
  (numpy's default sort orders equal scores differently across versions and CPUs): among equal scores
  the candidate with the higher index comes first. The papers' numbers came from BLIP's rule.
* ``"pessimistic"`` (default): every other candidate with the same score is ahead of the ground truth,
  so a model that scores all candidates equally gets R@1 = 0, never 100.
* ``"optimistic"``: they are all behind it.

Ranks come from counting, per query, the candidates scoring at least the best ground truth, in row
chunks of bounded memory: O(queries × candidates) with no per-query Python loop and no sort.
"""

from __future__ import annotations

from typing import Literal, Sequence, Union

import numpy as np
import torch

from lavislite.common.errors import DataError

__all__ = ["i2t_t2i_recall", "video_text_recall", "retrieval_ranks"]

ArrayLike = Union[np.ndarray, torch.Tensor]
Ties = Literal["pessimistic", "optimistic", "blip"]
TIE_RULES = ("pessimistic", "optimistic", "blip")
_CHUNK_ELEMENTS = 1 << 22  # ~4M comparisons per block: a few MB of booleans


def _to_numpy(scores: ArrayLike, name: str) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu()
        if not scores.is_floating_point() or scores.dtype in (torch.bfloat16, torch.float16):
            scores = scores.float()
        scores = scores.numpy()
    arr = np.asarray(scores)
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-D score matrix (queries × candidates), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        row = int(np.argwhere(np.isnan(arr))[0][0])
        raise DataError(f"{name} contains NaN (first in row {row}); NaN scores cannot be ranked, fix the model outputs")
    return arr


def _gt_lists(gt: Sequence, n_queries: int, n_candidates: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Flatten per-query ground-truth index lists into (flat indices, offsets)."""
    if isinstance(gt, torch.Tensor):
        gt = gt.tolist()
    if len(gt) != n_queries:
        raise DataError(f"{name} has {len(gt)} entries but the score matrix has {n_queries} query rows; give one entry per query")
    lists = [[g] if isinstance(g, (int, np.integer)) else list(g) for g in gt]
    lengths = np.fromiter((len(g) for g in lists), dtype=np.int64, count=n_queries)
    if n_queries and lengths.min() == 0:
        q = int(np.argmin(lengths))
        raise DataError(f"{name}[{q}] is empty: every query needs at least one ground-truth index")
    try:
        flat = np.fromiter((int(i) for g in lists for i in g), dtype=np.int64, count=int(lengths.sum()))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must hold integer indices (or lists of them): {exc}") from exc
    bad = (flat < 0) | (flat >= n_candidates)
    if bad.any():
        pos = int(np.argmax(bad))
        q = int(np.searchsorted(np.cumsum(lengths), pos, side="right"))
        raise DataError(f"{name}[{q}] holds index {int(flat[pos])}, outside the {n_candidates} candidates (columns) of the score matrix")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return flat, offsets


def retrieval_ranks(scores: ArrayLike, gt: Sequence, *, ties: Ties = "pessimistic") -> np.ndarray:
    """0-based rank of each query's best ground-truth candidate (``scores``: queries × candidates).

    ``gt[q]`` is one candidate index or a list of them.
    """
    if ties not in TIE_RULES:
        raise DataError(f"tie rule (ties=, run.tie_rule) {ties!r}: use one of {', '.join(TIE_RULES)}")
    arr = _to_numpy(scores, "scores")
    n_q, n_c = arr.shape
    if n_q == 0:
        raise DataError("scores has no query rows; there is nothing to evaluate")
    flat, offsets = _gt_lists(gt, n_q, n_c, "gt")
    rows = np.repeat(np.arange(n_q), np.diff(offsets))
    gt_scores = arr[rows, flat]
    best = np.maximum.reduceat(gt_scores, offsets[:-1])
    ranks = np.empty(n_q, dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(n_c, 1))
    for start in range(0, n_q, step):
        stop = min(start + step, n_q)
        thresh = best[start:stop, None]
        block = arr[start:stop]
        ranks[start:stop] = (block >= thresh).sum(1) if ties == "pessimistic" else (block > thresh).sum(1)
    if ties == "blip":
        ranks = _blip_ranks(arr, rows, flat, offsets)
    elif ties == "pessimistic":
        # The count above includes the ground truths that reach the best score (always >= 1); they are not ahead.
        ranks -= np.add.reduceat((gt_scores >= best[rows]).astype(np.int64), offsets[:-1])
    return ranks


def _blip_ranks(arr: np.ndarray, rows: np.ndarray, flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Position of each ground truth in ``argsort(row, kind="stable")[::-1]`` (higher scores first, then
    higher indices among equal scores), the best of a query's ground truths."""
    n_c = arr.shape[1]
    cols = np.arange(n_c)
    per_gt = np.empty(len(flat), dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(n_c, 1))
    for start in range(0, len(flat), step):
        stop = min(start + step, len(flat))
        block = arr[rows[start:stop]]
        s = arr[rows[start:stop], flat[start:stop]][:, None]
        later = cols[None, :] > flat[start:stop, None]
        per_gt[start:stop] = (block > s).sum(1) + ((block == s) & later).sum(1)
    return np.minimum.reduceat(per_gt, offsets[:-1])


def _summary(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    out = {f"{prefix}_r{k}": float(100.0 * np.mean(ranks < k)) for k in (1, 5, 10)}
    out[f"{prefix}_r_mean"] = (out[f"{prefix}_r1"] + out[f"{prefix}_r5"] + out[f"{prefix}_r10"]) / 3
    out[f"{prefix}_medr"] = float(np.median(ranks + 1))
    out[f"{prefix}_meanr"] = float(np.mean(ranks + 1))
    return out


def i2t_t2i_recall(
    scores_i2t: ArrayLike,
    scores_t2i: ArrayLike,
    img2txt: Sequence[Sequence[int]],
    txt2img: Sequence[int] | Sequence[Sequence[int]],
    *,
    visual_prefix: str = "img",
    ties: Ties = "pessimistic",
) -> dict[str, float]:
    """BLIP retrieval metrics from ``scores_i2t`` (n_img × n_txt) and ``scores_t2i`` (n_txt × n_img).

    Keys (percentages except ranks): ``txt_r1/5/10``, ``txt_r_mean`` (image -> text),
    ``img_r1/5/10``, ``img_r_mean`` (text -> image), ``r_mean``, and ``txt_medr``, ``img_medr``,
    ``txt_meanr``, ``img_meanr`` (median / mean of rank + 1). ``visual_prefix`` renames ``img``
    (e.g. ``"vid"``). ``ties``: ``pessimistic``, ``optimistic`` or ``blip`` (see the module docstring).
    """
    i2t = _to_numpy(scores_i2t, "scores_i2t")
    t2i = _to_numpy(scores_t2i, "scores_t2i")
    if t2i.shape != i2t.shape[::-1]:
        raise DataError(
            f"scores_i2t has shape {i2t.shape} (images × texts) but scores_t2i has {t2i.shape}; expected {i2t.shape[::-1]} (texts × images)"
        )
    txt = _summary(retrieval_ranks(i2t, img2txt, ties=ties), "txt")
    vis = _summary(retrieval_ranks(t2i, txt2img, ties=ties), visual_prefix)
    out = {k: v for k, v in txt.items() if not k.endswith(("medr", "meanr"))}
    out.update({k: v for k, v in vis.items() if not k.endswith(("medr", "meanr"))})
    out["r_mean"] = (out["txt_r_mean"] + out[f"{visual_prefix}_r_mean"]) / 2
    out.update({k: v for k, v in {**txt, **vis}.items() if k.endswith(("medr", "meanr"))})
    return out


def video_text_recall(
    scores_v2t: ArrayLike,
    scores_t2v: ArrayLike,
    vid2txt: Sequence[Sequence[int]],
    txt2vid: Sequence[int] | Sequence[Sequence[int]],
    *,
    ties: Ties = "pessimistic",
) -> dict[str, float]:
    """Video-text retrieval metrics under BLIP's names (``eval_retrieval_video.py``).

    ``txt_r1/5/10``, ``txt_r_mean``, ``vid_r1/5/10``, ``vid_r_mean``, ``vid_mdR`` (median rank + 1 of
    text -> video), ``r_mean``, plus ``txt_medr``, ``txt_meanr``, ``vid_meanr``.
    """
    out = i2t_t2i_recall(scores_v2t, scores_t2v, vid2txt, txt2vid, visual_prefix="vid", ties=ties)
    out["vid_mdR"] = out.pop("vid_medr")
    return out
