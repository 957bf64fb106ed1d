"""Image-text and video-text retrieval: ITC ranking re-ranked by ITM, as BLIP evaluates it.

One task, two configurations: ``retrieval`` (COCO, Flickr30k; BLIP ``train_retrieval.evaluation``) ranks
images, ``video_retrieval`` (MSR-VTT, zero-shot; BLIP ``eval_retrieval_video.py``) ranks videos seen as
their sampled frames (``run.visual_input``: ``image`` or ``video``). Evaluation:

1. every text of the split is encoded in batches (``model.encode_text``: ITC features + token ids);
2. every image is encoded (``model.encode_image``: all visual tokens kept for ITM + ITC features). A video
   is its frames through the same call, several videos at once on (B*T, 3, H, W): its ITC features are the
   mean over T of the frames' features and its ITM input is every frame's tokens concatenated, (T*N, D)
   (4,616 tokens for 8 frames at 384);
3. ``sims = model.itc_similarity(image_feats, text_feats)`` (BLIP: cosine, no temperature; the model owns it);
4. for each image its top ``k_test`` texts, and for each text its top ``k_test`` images, are re-scored by
   the ITM head (:mod:`lavislite.tasks.rerank`, the procedure ``lavislite retrieve`` uses too); a re-ranked
   pair scores ``itm logit + similarity``, every other pair -100;
5. ``i2t_t2i_recall`` (images: txt_r1/5/10, img_r1/5/10, ``r_mean``) or ``video_text_recall`` (videos:
   ``vid_r1/5/10``, ``vid_mdR``, ``txt_r1/5/10``, ``r_mean``); ``agg_metrics`` = ``r_mean``.

Re-ranking pools the (image, text) pairs of both directions, scores a pair that is in both top-k lists once,
and groups the pairs by image: each image's texts go through grouped ITM calls on the image's un-repeated
tokens, so its cross-attention K/V are projected once per call instead of once per pair. A call holds at
most ``run.itm_pairs_per_batch`` texts, or, when ``run.itm_visual_tokens_per_batch`` is set (the video
configuration), as many as keep the cross-attended tokens under it, so memory stays bounded whatever
``k_test`` and the number of frames. Both directions' queries are split across ranks and the runner
gathers the top-k rows; every rank encodes the whole split (as BLIP does), which is cheap next to the ITM
passes. With one frame per video both configurations give the same score matrices.

``k_test`` larger than the number of candidates (a small split) is clamped to it with a warning. With
``run.skip_bad_samples`` an unreadable image or video is left out together with its captions, and the
number left out is reported (``num_skipped_<videos|images>``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lavislite.common import dist
from lavislite.common.errors import ConfigError, DataError
from lavislite.common.logging import progress
from lavislite.common.registry import registry
from lavislite.common.utils import device_of
from lavislite.models.protocols import RetrievalModel
from lavislite.tasks._common import TrainProgressMixin, loader_dataset, unwrap
from lavislite.tasks.base_task import BaseTask
from lavislite.tasks.rerank import rerank_both_directions

logger = logging.getLogger(__name__)

FILL = -100.0  # BLIP's score outside the re-ranked top-k


@dataclass(frozen=True)
class VisualInput:
    """What one configuration ranks against texts: the sample key and the dataset's names for it."""

    key: str  # samples[key]: (B, 3, H, W) images or (B, T, 3, H, W) videos
    noun: str
    to_text: str  # dataset attribute: text indices per visual item
    from_text: str  # dataset attribute: visual item index per text
    directions: tuple[str, str]  # (visual -> text, text -> visual) result names
    count_always: bool  # report num_<noun>s / num_skipped_<noun>s even when nothing was skipped


VISUAL_INPUTS = {
    "image": VisualInput("image", "image", "img2txt", "txt2img", ("i2t", "t2i"), count_always=False),
    "video": VisualInput("video", "video", "vid2txt", "txt2vid", ("v2t", "t2v"), count_always=True),
}


# -- features ---------------------------------------------------------------------------------------
@dataclass
class RetrievalFeatures:
    """Everything re-ranking needs, for one split."""

    image_tokens: Tensor  # (n_img, N, D) visual tokens (for video: frames concatenated)
    image_feats: Tensor  # (n_img, ...) the model's ITC features (for video: mean over frames)
    text_ids: Tensor  # (n_txt, L) [CLS]-first ids; itm_logits puts [ENC] in front itself
    text_atts: Tensor  # (n_txt, L)
    text_feats: Tensor  # (n_txt, ...) the model's ITC features

    def sims(self, model: Any) -> Tensor:
        """ITC similarities, images × texts, as the model defines them."""
        return model.itc_similarity(self.image_feats, self.text_feats)


def encode_texts(model: nn.Module, texts: Sequence[str], batch_size: int = 256, max_length: int = 35) -> tuple[Tensor, Tensor, Tensor]:
    """``(ITC features (float32), ids, attention mask)`` of ``texts``, encoded ``batch_size`` at a time."""
    if len(texts) == 0:
        raise DataError("retrieval evaluation: the split has no texts")
    feats, ids, atts = [], [], []
    for start in range(0, len(texts), batch_size):
        f, i, a = model.encode_text(list(texts[start : start + batch_size]), max_length=max_length)
        feats.append(f.float())
        ids.append(i)
        atts.append(a)
    return torch.cat(feats), torch.cat(ids), torch.cat(atts)


def encode_frames(model: nn.Module, video: Tensor, frames_per_forward: int = 256) -> tuple[Tensor, Tensor]:
    """``(tokens (B, T*N, D), feats (B, ...))`` of a (B, T, 3, H, W) batch: frame tokens concatenated over T,
    ``feats`` = mean over T of the frames' ITC features (float32; BLIP: unnormalised projections)."""
    if video.dim() != 5:
        raise DataError(f"video retrieval needs samples['video'] of shape (B, T, 3, H, W), got {tuple(video.shape)}")
    b, t = video.shape[:2]
    frames = video.flatten(0, 1)
    step = max(1, int(frames_per_forward))
    toks, feats = [], []
    for s in range(0, frames.shape[0], step):
        tok, feat = model.encode_image(frames[s : s + step])
        toks.append(tok)
        feats.append(feat)
    tokens = torch.cat(toks) if len(toks) > 1 else toks[0]
    feat = torch.cat(feats) if len(feats) > 1 else feats[0]
    return tokens.reshape(b, t * tokens.shape[1], tokens.shape[2]), feat.float().reshape(b, t, *feat.shape[1:]).mean(1)


def encode_visual(
    model: nn.Module, loader: Any, n_items: int, device: torch.device, *, key: str = "image", frames_per_forward: int = 256,
    store: str = "device",
) -> tuple[Tensor, Tensor, Tensor]:
    """``(tokens (n, N, D), ITC features (n, ...) float32, filled (n,) bool)`` of every image (``key="image"``)
    or video (``key="video"``) the loader yields, placed by ``samples['index']`` (else in loader order).
    Rows the loader never produced (skipped unreadable files) stay unfilled. ``store="cpu"`` keeps them in
    host memory (1,000 MSR-VTT videos at 8 x 577 x 768 fp32: 14 GB)."""
    tokens: Tensor | None = None
    feats: Tensor | None = None
    filled = torch.zeros(n_items, dtype=torch.bool)
    pos = 0
    for samples in progress(loader, desc=f"retrieval: encode {key}s", enabled=dist.is_main_process()):
        if key not in samples:
            raise DataError(f"retrieval evaluation needs samples[{key!r}]; the batch has {sorted(samples)}")
        x = samples[key].to(device, non_blocking=True)
        if key == "video":
            tok, feat = encode_frames(model, x, frames_per_forward)
        else:
            tok, feat = model.encode_image(x)
            feat = feat.float()
        b = tok.shape[0]
        idx = samples.get("index")
        idx = torch.as_tensor(idx if idx is not None else range(pos, pos + b), dtype=torch.long).view(-1).cpu()
        pos += b
        if int(idx.max()) >= n_items:
            raise DataError(f"retrieval evaluation: {key} index {int(idx.max())} out of range for {n_items} {key}s")
        target = torch.device("cpu") if store == "cpu" else tok.device
        if tokens is None:
            tokens = torch.empty((n_items, *tok.shape[1:]), dtype=tok.dtype, device=target)
            feats = torch.zeros((n_items, *feat.shape[1:]), device=target)
        tokens[idx.to(target)] = tok.to(target)
        feats[idx.to(target)] = feat.to(target)
        filled[idx] = True
    if tokens is None:
        raise DataError(f"retrieval evaluation: the loader produced no {key}s (every file unreadable, or an empty split)")
    return tokens, feats, filled


# -- re-ranking ------------------------------------------------------------------------------------
def dense_scores(n_queries: int, n_candidates: int, rows: Sequence[int], indices: Tensor, scores: Tensor) -> Tensor:
    """The full (queries × candidates) matrix: re-ranked scores where given, -100 elsewhere."""
    out = torch.full((n_queries, n_candidates), FILL, dtype=torch.float32)
    rows_t = torch.as_tensor(list(rows), dtype=torch.long)
    out[rows_t.unsqueeze(1), torch.as_tensor(indices, dtype=torch.long)] = torch.as_tensor(scores, dtype=torch.float32)
    return out


def query_shard(n: int, rank: int, world: int) -> range:
    """This rank's contiguous block of query rows (BLIP's split)."""
    step = -(-n // world)
    return range(min(n, rank * step), min(n, (rank + 1) * step))


def clamp_k(k_test: int, n_candidates: int, direction: str) -> int:
    if int(k_test) < 1:
        raise ConfigError(f"run.k_test={k_test}; use an integer >= 1 (BLIP: 256 for COCO, 128 for Flickr30k and MSR-VTT)")
    if k_test > n_candidates:
        logger.warning("run.k_test=%d exceeds the %d candidates for %s; re-ranking all %d", k_test, n_candidates, direction, n_candidates)
        return n_candidates
    return int(k_test)


def retrieval_scores(
    model: nn.Module, feats: RetrievalFeatures, k_test: int, *, rank: int = 0, world: int = 1, pairs_per_batch: int = 1024,
    directions: tuple[str, str] = ("i2t", "t2i"), device: torch.device | None = None,
) -> dict[str, tuple[range, Tensor, Tensor]]:
    """This rank's re-ranked rows in both directions: ``{"i2t"|"t2i": (rows, top indices, scores)}``
    (``directions`` renames them, e.g. ``("v2t", "t2v")``).

    The (image, text) pairs of both directions' rows are scored together
    (:func:`lavislite.tasks.rerank.rerank_both_directions`): grouped by image (each image's K/V projected once
    per ITM call of at most ``pairs_per_batch`` texts), a pair in both directions' top-k scored once. Same
    scores as BLIP's per-query loop up to float rounding. ``device``: where each ITM call's inputs go.
    """
    sims = feats.sims(model)
    n_img, n_txt = sims.shape
    to_text, from_text = directions
    k_i, k_t = clamp_k(k_test, n_txt, to_text), clamp_k(k_test, n_img, from_text)
    rows_i, rows_t = query_shard(n_img, rank, world), query_shard(n_txt, rank, world)
    i2t, t2i = rerank_both_directions(sims, feats, model, rows_i, k_i, rows_t, k_t, pairs_per_batch,
                                      desc="retrieval: re-rank (ITM, grouped by image)", device=device)
    return {to_text: (rows_i, *i2t), from_text: (rows_t, *t2i)}


# -- the task --------------------------------------------------------------------------------------
@registry.register_task("retrieval")
class RetrievalTask(TrainProgressMixin, BaseTask):
    """Train with ITC + ITM (``model(samples)``); evaluate with ITC top-k re-ranked by ITM."""

    RUN_DEFAULTS: ClassVar[dict] = {
        "visual_input": "image",  # image | video (sampled frames; zero-shot evaluation only)
        "k_test": 256,  # COCO 256, Flickr30k 128, MSR-VTT 128
        "itm_pairs_per_batch": 1024,  # query-candidate pairs per ITM forward while re-ranking
        "itm_visual_tokens_per_batch": 0,  # > 0: pairs per ITM forward = this // visual tokens per item
        "vit_frames_per_batch": 256,  # video: frames per encode_image call
        "text_batch_size": 256,  # texts per encode_text call (BLIP: 256)
        "max_text_length": 35,
        "video_features_on_cpu": False,  # keep visual tokens in host memory (moved to the device per ITM call)
        "save_scores": False,  # also write <split>_scores.npz (both dense score matrices)
        "tie_rule": "pessimistic",  # equal scores in R@K: pessimistic | optimistic | blip (lavislite.metrics.retrieval)
    }
    select_metric = "r_mean"
    result_id_key = "instance_id"
    requires = (RetrievalModel,)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._splits: dict[str, dict[str, Any]] = {}

    def visual(self) -> VisualInput:
        """The configuration ``run.visual_input`` selects."""
        name = str(self.run_key("visual_input"))
        if name not in VISUAL_INPUTS:
            raise ConfigError(f"run.visual_input={name!r}; use one of {', '.join(VISUAL_INPUTS)}")
        return VISUAL_INPUTS[name]

    def train_step(self, model: nn.Module, samples: dict[str, Any]) -> dict[str, Any]:
        if self.visual().key == "video":
            raise ConfigError("retrieval over videos evaluates zero-shot transfer only; set run.evaluate=true")
        return super().train_step(model, self.with_progress(samples))

    def evaluation(self, model: nn.Module, data_loader: Any, split: str) -> list[dict]:
        vis = self.visual()
        dataset = loader_dataset(data_loader, split, needs=("text", vis.to_text, vis.from_text))
        model = unwrap(model)
        device = device_of(model)
        to_text_table, from_text_table = getattr(dataset, vis.to_text), getattr(dataset, vis.from_text)
        n_vis, n_txt = len(to_text_table), len(dataset.text)
        to_text = [list(_lookup(to_text_table, i, vis.to_text)) for i in range(n_vis)]
        from_text = [_lookup(from_text_table, t, vis.from_text) for t in range(n_txt)]
        with torch.inference_mode():
            feats, kept = self.features(model, data_loader, dataset, device, to_text, from_text)
            per_item = int(feats.image_tokens.shape[1])
            budget = int(self.run_key("itm_visual_tokens_per_batch"))
            pairs = max(1, budget // per_item) if budget > 0 else int(self.run_key("itm_pairs_per_batch"))
            per_dir = retrieval_scores(
                model, feats, int(self.run_key("k_test")), rank=dist.get_rank(), world=dist.get_world_size(),
                pairs_per_batch=pairs, directions=vis.directions, device=device,
            )
        self._splits[split] = {**kept, "n_items": n_vis, "n_texts": n_txt}
        results = []
        for name, (rows, idx, scores) in per_dir.items():
            for j, q in enumerate(rows):
                results.append({"instance_id": f"{name}:{q}", "direction": name, "query": q, "topk": idx[j].numpy(), "scores": scores[j].numpy()})
        return results

    def features(
        self, model: nn.Module, data_loader: Any, dataset: Any, device: torch.device, to_text: list[list[int]], from_text: list[Any]
    ) -> tuple[RetrievalFeatures, dict[str, Any]]:
        """Encode every text and visual item of the split (all of it on every rank, in dataset order);
        unreadable items (``run.skip_bad_samples``) are left out with their texts. Returns the features and
        ``{"to_text", "from_text"}`` renumbered to the items kept."""
        vis = self.visual()
        text_feats, ids, atts = encode_texts(model, dataset.text, int(self.run_key("text_batch_size")), int(self.run_key("max_text_length")))
        loader = DataLoader(
            dataset, batch_size=data_loader.batch_size or 1, shuffle=False, num_workers=data_loader.num_workers,
            collate_fn=data_loader.collate_fn, pin_memory=torch.cuda.is_available(),
        )
        store = "cpu" if self.run_key("video_features_on_cpu") else "device"
        tokens, image_feats, filled = encode_visual(
            model, loader, len(to_text), device, key=vis.key, frames_per_forward=int(self.run_key("vit_frames_per_batch")), store=store
        )
        keep_v, keep_t, sub_to_text, sub_from_text = _kept(filled, to_text, from_text, vis.noun)
        n_vis, n_txt = len(to_text), len(from_text)
        if len(keep_v) < n_vis:
            if not getattr(dataset, "skip_bad_samples", False):
                raise DataError(
                    f"retrieval evaluation: {n_vis - len(keep_v)} of {n_vis} {vis.noun}s were not produced by the loader; the "
                    f"dataset's length must equal len({vis.to_text}), or set run.skip_bad_samples=true to leave unreadable files out"
                )
            logger.warning("retrieval: %d unreadable %s(s) left out with their %d caption(s)", n_vis - len(keep_v), vis.noun, n_txt - len(keep_t))
            kv = torch.as_tensor(keep_v, device=tokens.device)
            tokens, image_feats = tokens[kv], image_feats[kv]
        if len(keep_t) < n_txt:
            kt = torch.as_tensor(keep_t)
            text_feats, ids, atts = text_feats[kt], ids[kt], atts[kt]
        store_device = tokens.device
        feats = RetrievalFeatures(tokens, image_feats, ids.to(store_device), atts.to(store_device), text_feats.to(store_device))
        kept = {"to_text": sub_to_text, "from_text": sub_from_text, "n_kept_items": len(keep_v), "n_kept_texts": len(keep_t)}
        return feats, kept

    def score_matrices(self, results: list[dict], split: str) -> dict[str, Tensor]:
        """The two dense matrices (visual x texts, texts x visual) from gathered results (-100 off the top-k)."""
        info = self._splits.get(split)
        if info is None:
            raise ConfigError(f"retrieval: split {split!r} was not evaluated by this task's evaluation()")
        n_v, n_t = info["n_kept_items"], info["n_kept_texts"]
        to_text, from_text = self.visual().directions
        mats = {}
        for name, n_q, n_c in ((to_text, n_v, n_t), (from_text, n_t, n_v)):
            rows = [r for r in results if r["direction"] == name]
            if len(rows) != n_q:
                raise DataError(f"retrieval {split}: gathered {len(rows)} {name} rows, expected {n_q}")
            topk, scores = np.stack([r["topk"] for r in rows]), np.stack([r["scores"] for r in rows])
            mats[name] = dense_scores(n_q, n_c, [r["query"] for r in rows], topk, scores)
        return mats

    def after_evaluation(self, results: list[dict], split: str, output_dir: Path | None, epoch: Any) -> dict[str, float]:
        from lavislite.metrics import i2t_t2i_recall, video_text_recall

        vis = self.visual()
        mats = self.score_matrices(results, split)
        info = self._splits[split]
        to_text, from_text = vis.directions
        recall = video_text_recall if vis.key == "video" else i2t_t2i_recall
        metrics = recall(mats[to_text], mats[from_text], info["to_text"], info["from_text"], ties=str(self.run_key("tie_rule")))
        metrics["agg_metrics"] = metrics["r_mean"]
        self.scores[split] = mats
        skipped = info["n_items"] - info["n_kept_items"]
        if vis.count_always or skipped:
            metrics[f"num_{vis.noun}s"] = info["n_kept_items"]
            metrics[f"num_skipped_{vis.noun}s"] = skipped
        if output_dir is not None and self.run_key("save_scores"):
            np.savez_compressed(Path(output_dir) / f"{split}_scores.npz", **{k: v.numpy() for k, v in mats.items()})
        return metrics


@registry.register_task("video_retrieval")
class VideoRetrievalTask(RetrievalTask):
    """``retrieval`` over videos (BLIP's MSR-VTT zero-shot setting): only the defaults differ."""

    RUN_DEFAULTS: ClassVar[dict] = {
        **RetrievalTask.RUN_DEFAULTS,
        "visual_input": "video",
        "k_test": 128,  # BLIP's MSR-VTT setting
        "itm_visual_tokens_per_batch": 147712,  # cross-attended visual tokens per ITM forward (32 videos x 8 x 577)
    }


def _lookup(table: Any, i: int, name: str) -> Any:
    try:
        return table[i]
    except (KeyError, IndexError) as exc:
        raise DataError(f"retrieval evaluation: dataset.{name} has no entry for index {i}; indices must run 0..n-1") from exc


def _kept(filled: Tensor, to_text: list[list[int]], from_text: list[Any], noun: str) -> tuple[list[int], list[int], list[list[int]], list[Any]]:
    """Items that were read and their texts, with both tables renumbered to the kept ones (unchanged when
    every item was read). ``from_text`` entries are an index or a list of indices."""
    n = len(filled)
    if bool(filled.all()):
        return list(range(n)), list(range(len(from_text))), to_text, from_text
    keep_v = [i for i in range(n) if bool(filled[i])]
    new_v = {v: j for j, v in enumerate(keep_v)}

    def renumber(g: Any) -> Any:
        if isinstance(g, (list, tuple)):
            kept = [new_v[int(v)] for v in g if int(v) in new_v]
            return kept or None
        return new_v.get(int(g))

    mapped = [renumber(g) for g in from_text]
    keep_t = [t for t, g in enumerate(mapped) if g is not None]
    new_t = {t: j for j, t in enumerate(keep_t)}
    sub_to_text = [[new_t[t] for t in to_text[v] if t in new_t] for v in keep_v]
    if any(not row for row in sub_to_text):
        v = keep_v[[i for i, row in enumerate(sub_to_text) if not row][0]]
        raise DataError(f"retrieval: {noun} {v} has no caption (its entry in the dataset's text table is empty); every {noun} needs one")
    return keep_v, keep_t, sub_to_text, [mapped[t] for t in keep_t]
