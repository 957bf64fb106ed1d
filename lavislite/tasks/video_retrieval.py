"""Zero-shot text-video retrieval with an image-text model (BLIP ``eval_retrieval_video.py``, BLIP_FACTS §4).

A video is its sampled frames seen by the image model:

1. every caption is encoded (``model.encode_text``: ITC embedding + token ids);
2. the frames of several videos go through the ViT together (``model.encode_image`` on (B*T, 3, H, W));
   the video's ITC embedding is ``normalize(mean over T of the unnormalised projected frame [CLS])`` and
   its ITM input is every frame's tokens concatenated, (T*N, D) (4,616 tokens for 8 frames at 384);
3. ``sims = video_embeds @ text_embeds.T``; for each video its top ``k_test`` captions, and for each
   caption its top ``k_test`` videos, are re-scored by ``model.itm_logits`` over the concatenated frame
   tokens (no mask = all ones); score = ITM logit + cosine, -100 elsewhere;
4. ``video_text_recall`` gives ``vid_r1/5/10`` (text -> video), ``vid_mdR``, ``txt_r1/5/10`` and ``r_mean``.

This is the image retrieval procedure (:mod:`lavislite.tasks.retrieval`) with a video as the image; with
one frame per video both give the same score matrices. Re-ranking uses the helpers both tasks share
(:mod:`lavislite.tasks._rerank`): the (video, caption) pairs of both directions are pooled (a pair in both
top-k lists scored once) and grouped by video, so a video's 4,616 tokens are projected to
cross-attention K/V once per ITM call instead of once per caption. No ITM forward scores more than
``run.itm_visual_tokens_per_batch // (T*N)`` captions against one video, so peak memory stays bounded
whatever ``k_test`` and the number of frames.

Any model with ``encode_image`` / ``encode_text`` / ``itm_logits`` (INTERFACES.md retrieval protocol) works.
With ``run.skip_bad_samples`` an unreadable video is left out together with its captions, and the number
left out is reported (``num_skipped_videos``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lavislite.common import dist
from lavislite.common.errors import ConfigError, DataError
from lavislite.common.logging import progress
from lavislite.common.registry import registry
from lavislite.models.protocols import RetrievalModel
from lavislite.tasks._common import loader_dataset, unwrap
from lavislite.tasks.base_task import BaseTask
from lavislite.tasks._rerank import chunk_candidates, rerank_both_directions  # noqa: F401 (chunk_candidates: public re-export)
from lavislite.tasks.retrieval import RetrievalFeatures, clamp_k, dense_scores, encode_texts, query_shard

logger = logging.getLogger(__name__)


# -- video features ----------------------------------------------------------------------------------
def encode_frames(model: nn.Module, video: Tensor, frames_per_forward: int = 256) -> tuple[Tensor, Tensor]:
    """``(tokens (B, T*N, D), proj (B, E))`` of a (B, T, 3, H, W) batch: frame tokens concatenated over T,
    ``proj`` = mean over T of the *unnormalised* frame projections (normalise it afterwards)."""
    if video.dim() != 5:
        raise DataError(f"video retrieval needs samples['video'] of shape (B, T, 3, H, W), got {tuple(video.shape)}")
    b, t = video.shape[:2]
    frames = video.flatten(0, 1)
    toks, projs = [], []
    for s in range(0, frames.shape[0], max(1, int(frames_per_forward))):
        tok, proj = model.encode_image(frames[s : s + frames_per_forward])
        toks.append(tok)
        projs.append(proj)
    tokens = torch.cat(toks) if len(toks) > 1 else toks[0]
    proj = torch.cat(projs) if len(projs) > 1 else projs[0]
    return tokens.reshape(b, t * tokens.shape[1], tokens.shape[2]), proj.float().reshape(b, t, -1).mean(1)


def encode_videos(
    model: nn.Module, loader: Any, n_videos: int, device: torch.device, *, frames_per_forward: int = 256, store: str = "device"
) -> tuple[Tensor, Tensor, Tensor]:
    """``(tokens (n, T*N, D), normalised embeds (n, E), filled (n,) bool)`` of every video the loader yields,
    placed by ``samples['index']``. Rows the loader never produced (skipped bad videos) stay unfilled.
    ``store="cpu"`` keeps the tokens in host memory (1,000 MSR-VTT videos at 8 x 577 x 768 fp32: 14 GB)."""
    tokens: Tensor | None = None
    embeds: Tensor | None = None
    filled = torch.zeros(n_videos, dtype=torch.bool)
    pos = 0
    for samples in progress(loader, desc="video retrieval: encode videos", enabled=dist.is_main_process()):
        if "video" not in samples:
            raise DataError(f"video retrieval needs samples['video']; the batch has {sorted(samples)}")
        tok, proj = encode_frames(model, samples["video"].to(device, non_blocking=True), frames_per_forward)
        b = tok.shape[0]
        idx = samples.get("index")
        idx = torch.as_tensor(idx if idx is not None else range(pos, pos + b), dtype=torch.long).view(-1).cpu()
        pos += b
        if int(idx.max()) >= n_videos:
            raise DataError(f"video retrieval: video index {int(idx.max())} out of range for {n_videos} videos (dataset vid2txt)")
        target = torch.device("cpu") if store == "cpu" else tok.device
        if tokens is None:
            tokens = torch.empty((n_videos, *tok.shape[1:]), dtype=tok.dtype, device=target)
            embeds = torch.zeros((n_videos, proj.shape[-1]), device=target)
        tokens[idx.to(target)] = tok.to(target)
        embeds[idx.to(target)] = F.normalize(proj, dim=-1).to(target)
        filled[idx] = True
    if tokens is None:
        raise DataError("video retrieval: the loader produced no videos (every video unreadable, or an empty split)")
    return tokens, embeds, filled


# -- bounded re-ranking (helpers in lavislite.tasks._rerank, shared with image retrieval) ----------------
def video_retrieval_scores(
    model: nn.Module, feats: RetrievalFeatures, k_test: int, *, pairs_per_batch: int, rank: int = 0, world: int = 1
) -> dict[str, tuple[range, Tensor, Tensor]]:
    """This rank's re-ranked rows: ``{"v2t"|"t2v": (rows, top indices (r, k), itm + cosine scores (r, k))}``.

    Both directions' (video, caption) pairs are pooled and grouped by video
    (:func:`lavislite.tasks._rerank.rerank_both_directions`, as image retrieval): one ITM forward scores one
    video's tokens against at most ``pairs_per_batch`` captions, so memory stays bounded whatever ``k``.
    """
    sims = feats.sims()
    n_vid, n_txt = sims.shape
    k_v, k_t = clamp_k(k_test, n_txt, "v2t"), clamp_k(k_test, n_vid, "t2v")
    rows_v, rows_t = query_shard(n_vid, rank, world), query_shard(n_txt, rank, world)
    v2t, t2v = rerank_both_directions(sims, feats, model, rows_v, k_v, rows_t, k_t, pairs_per_batch,
                                      desc="video retrieval: re-rank (ITM, grouped by video)")
    return {"v2t": (rows_v, *v2t), "t2v": (rows_t, *t2v)}


class _OnDevice:
    """Passes the protocol calls through, moving CPU-stored inputs to the model's device first."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device

    def itm_logits(self, tokens: Tensor, ids: Tensor, atts: Tensor, image_atts: Tensor | None = None) -> Tensor:
        d = self.device
        return self.model.itm_logits(tokens.to(d, non_blocking=True), ids.to(d), atts.to(d), image_atts)


# -- the task --------------------------------------------------------------------------------------------
@registry.register_task("video_retrieval")
class VideoRetrievalTask(BaseTask):
    """Evaluation only (zero-shot transfer): ITC top-k over frame-averaged embeddings, re-ranked by ITM."""

    RUN_DEFAULTS: ClassVar[dict] = {
        "k_test": 128,  # BLIP's MSR-VTT setting
        "itm_visual_tokens_per_batch": 147712,  # cross-attended visual tokens per ITM forward (32 videos x 8 x 577)
        "vit_frames_per_batch": 256,  # frames per ViT forward while encoding videos
        "text_batch_size": 256,  # captions per encode_text call (BLIP: 256)
        "max_text_length": 35,
        "video_features_on_cpu": False,  # keep frame tokens in host memory (moved to the device per ITM chunk)
        "save_scores": False,  # also write <split>_scores.npz (both dense score matrices)
    }
    select_metric = "r_mean"
    result_id_key = "instance_id"
    requires = (RetrievalModel,)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._splits: dict[str, dict[str, Any]] = {}

    def train_step(self, model: nn.Module, samples: dict[str, Any]) -> dict[str, Any]:
        raise ConfigError("the video_retrieval task evaluates zero-shot transfer only; set run.evaluate=true")

    def evaluation(self, model: nn.Module, data_loader: Any, split: str) -> list[dict]:
        dataset = loader_dataset(data_loader, split, needs=("text", "vid2txt", "txt2vid"))
        model = unwrap(model)
        device = _device_of(model)
        n_vid = len(dataset.vid2txt)
        with torch.inference_mode():
            text_embeds, ids, atts = encode_texts(model, dataset.text, int(self.run_key("text_batch_size")), int(self.run_key("max_text_length")))
            loader = DataLoader(
                dataset, batch_size=data_loader.batch_size or 1, shuffle=False, num_workers=data_loader.num_workers,
                collate_fn=data_loader.collate_fn, pin_memory=torch.cuda.is_available(),
            )
            on_cpu = bool(self.run_key("video_features_on_cpu"))
            tokens, video_embeds, filled = encode_videos(
                model, loader, n_vid, device, frames_per_forward=int(self.run_key("vit_frames_per_batch")), store="cpu" if on_cpu else "device"
            )
            keep_v, keep_t, vid2txt, txt2vid = _kept(filled, dataset.vid2txt, dataset.txt2vid)
            if len(keep_v) < n_vid and not getattr(dataset, "skip_bad_samples", False):
                raise DataError(f"video retrieval {split!r}: {n_vid - len(keep_v)} of {n_vid} videos were not produced by the loader")
            store = tokens.device
            kv, kt = torch.as_tensor(keep_v, device=store), torch.as_tensor(keep_t)
            feats = RetrievalFeatures(
                image_tokens=tokens[kv] if len(keep_v) < n_vid else tokens,
                image_embeds=video_embeds[kv] if len(keep_v) < n_vid else video_embeds,
                text_ids=ids[kt].to(store), text_atts=atts[kt].to(store), text_embeds=text_embeds[kt].to(store),
            )
            tokens_per_video = int(tokens.shape[1])
            pairs = max(1, int(self.run_key("itm_visual_tokens_per_batch")) // tokens_per_video)
            scorer = _OnDevice(model, device) if on_cpu else model
            per_dir = video_retrieval_scores(
                scorer, feats, int(self.run_key("k_test")), pairs_per_batch=pairs, rank=dist.get_rank(), world=dist.get_world_size()
            )
        self._splits[split] = {
            "n_vid": len(keep_v), "n_txt": len(keep_t), "vid2txt": vid2txt, "txt2vid": txt2vid,
            "num_skipped_videos": n_vid - len(keep_v), "num_skipped_texts": len(dataset.txt2vid) - len(keep_t),
        }
        if len(keep_v) < n_vid:
            logger.warning("video retrieval %s: %d unreadable video(s) left out with their %d caption(s)", split, n_vid - len(keep_v), len(dataset.txt2vid) - len(keep_t))
        results = []
        for name, (rows, idx, scores) in per_dir.items():
            for j, q in enumerate(rows):
                results.append({"instance_id": f"{name}:{q}", "direction": name, "query": q, "topk": idx[j].numpy(), "scores": scores[j].numpy()})
        return results

    def score_matrices(self, results: list[dict], split: str) -> dict[str, Tensor]:
        """The dense ``v2t`` (videos x texts) and ``t2v`` matrices from gathered results (-100 off the top-k)."""
        info = self._splits.get(split)
        if info is None:
            raise ConfigError(f"video retrieval: split {split!r} was not evaluated by this task's evaluation()")
        mats = {}
        for name, n_q, n_c in (("v2t", info["n_vid"], info["n_txt"]), ("t2v", info["n_txt"], info["n_vid"])):
            rows = [r for r in results if r["direction"] == name]
            if len(rows) != n_q:
                raise DataError(f"video retrieval {split}: gathered {len(rows)} {name} rows, expected {n_q}")
            mats[name] = dense_scores(n_q, n_c, [r["query"] for r in rows], np.stack([r["topk"] for r in rows]), np.stack([r["scores"] for r in rows]))
        return mats

    def after_evaluation(self, results: list[dict], split: str, output_dir: Path | None, epoch: Any) -> dict[str, float]:
        from lavislite.metrics import video_text_recall

        info = self._splits[split] if split in self._splits else None
        mats = self.score_matrices(results, split)
        metrics = video_text_recall(mats["v2t"], mats["t2v"], info["vid2txt"], info["txt2vid"])
        metrics["agg_metrics"] = metrics["r_mean"]
        metrics["num_videos"] = info["n_vid"]
        metrics["num_skipped_videos"] = info["num_skipped_videos"]
        if output_dir is not None and self.run_key("save_scores"):
            np.savez_compressed(Path(output_dir) / f"{split}_scores.npz", v2t=mats["v2t"].numpy(), t2v=mats["t2v"].numpy())
        return metrics


def _kept(filled: Tensor, vid2txt: Any, txt2vid: Any) -> tuple[list[int], list[int], list[list[int]], list[int]]:
    """Videos that were read and their captions, with ``vid2txt``/``txt2vid`` renumbered to the kept ones."""
    keep_v = [i for i in range(len(filled)) if bool(filled[i])]
    new_v = {v: j for j, v in enumerate(keep_v)}
    keep_t = [t for t in range(len(txt2vid)) if int(txt2vid[t]) in new_v]
    new_t = {t: j for j, t in enumerate(keep_t)}
    sub_vid2txt = [[new_t[t] for t in vid2txt[v]] for v in keep_v]
    if any(not row for row in sub_vid2txt):
        v = keep_v[[i for i, row in enumerate(sub_vid2txt) if not row][0]]
        raise DataError(f"video retrieval: video {v} has no caption (vid2txt[{v}] is empty); every video needs one")
    return keep_v, keep_t, sub_vid2txt, [new_v[int(txt2vid[t])] for t in keep_t]


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")
