"""Image-text retrieval (COCO, Flickr30k): ITC ranking re-ranked by ITM, as BLIP evaluates it.

Evaluation (BLIP ``train_retrieval.evaluation``; BLIP_FACTS §3.3):

1. every text of the split is encoded in batches (``model.encode_text``: ITC embedding + token ids);
2. every image is encoded (``model.encode_image``: all ViT tokens kept for ITM + ITC embedding);
3. ``sims = normalize(image_proj) @ normalize(text_proj).T`` (cosine, no temperature);
4. image -> text: for each image the top ``k_test`` texts by ``sims`` are re-scored with the ITM head;
   text -> image likewise with each text's top ``k_test`` images. The score of a re-ranked pair is
   ``itm logit + cosine``; every other entry is -100.
5. ``i2t_t2i_recall`` gives txt_r1/5/10, img_r1/5/10, their means and ``r_mean`` (= ``agg_metrics``).

Re-ranking (:mod:`lavislite.tasks._rerank`, shared with video retrieval) pools the (image, text) pairs of
both directions, scores a pair that is in both top-k lists once, and groups the pairs by image: each
image's texts go through grouped ITM calls of at most ``run.itm_pairs_per_batch`` texts on the image's
un-repeated tokens, so its cross-attention K/V are projected once per call instead of once per pair.
Both directions' queries are split across ranks and the runner gathers the top-k rows; every rank
encodes the whole split (as BLIP does), which is cheap next to the ITM passes.

``k_test`` larger than the number of candidates (a small split) is clamped to it with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

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
from lavislite.tasks._common import TrainProgressMixin, loader_dataset, unwrap
from lavislite.tasks._rerank import rerank_both_directions
from lavislite.tasks.base_task import BaseTask

logger = logging.getLogger(__name__)

FILL = -100.0  # BLIP's score outside the re-ranked top-k


# -- features ---------------------------------------------------------------------------------------
@dataclass
class RetrievalFeatures:
    """Everything re-ranking needs, for one split (on the model's device)."""

    image_tokens: Tensor  # (n_img, N, D) ViT tokens (for video: frames concatenated)
    image_embeds: Tensor  # (n_img, E) L2-normalised ITC embeddings
    text_ids: Tensor  # (n_txt, L) [CLS]-first ids; itm_logits puts [ENC] in front itself
    text_atts: Tensor  # (n_txt, L)
    text_embeds: Tensor  # (n_txt, E) L2-normalised

    def sims(self) -> Tensor:
        """ITC cosine similarities, images × texts."""
        return self.image_embeds @ self.text_embeds.t()


def encode_texts(model: nn.Module, texts: Sequence[str], batch_size: int = 256, max_length: int = 35) -> tuple[Tensor, Tensor, Tensor]:
    """``(normalised ITC embeddings, ids, attention mask)`` of ``texts``, encoded ``batch_size`` at a time."""
    if len(texts) == 0:
        raise DataError("retrieval evaluation: the split has no texts")
    embeds, ids, atts = [], [], []
    for start in range(0, len(texts), batch_size):
        proj, i, a = model.encode_text(list(texts[start : start + batch_size]), max_length=max_length)
        embeds.append(F.normalize(proj.float(), dim=-1))
        ids.append(i)
        atts.append(a)
    return torch.cat(embeds), torch.cat(ids), torch.cat(atts)


def encode_images(model: nn.Module, loader: Any, n_images: int, device: torch.device, key: str = "image") -> tuple[Tensor, Tensor]:
    """``(tokens, normalised ITC embeddings)`` of every image the loader yields, placed by ``samples['index']``
    when the dataset gives it (else in loader order)."""
    tokens: Tensor | None = None
    embeds: Tensor | None = None
    filled = torch.zeros(n_images, dtype=torch.bool)
    pos = 0
    for samples in progress(loader, desc="retrieval: encode images", enabled=dist.is_main_process()):
        if key not in samples:
            raise DataError(f"retrieval evaluation needs samples[{key!r}]; the batch has {sorted(samples)}")
        tok, proj = model.encode_image(samples[key].to(device, non_blocking=True))
        b = tok.shape[0]
        idx = samples.get("index")
        idx = torch.as_tensor(idx if idx is not None else range(pos, pos + b), dtype=torch.long).view(-1)
        pos += b
        if int(idx.max()) >= n_images:
            raise DataError(f"retrieval evaluation: image index {int(idx.max())} out of range for {n_images} images (dataset img2txt)")
        if tokens is None:
            tokens = tok.new_empty((n_images, *tok.shape[1:]))
            embeds = torch.empty((n_images, proj.shape[-1]), device=proj.device)
        tokens[idx.to(tok.device)] = tok
        embeds[idx.to(proj.device)] = F.normalize(proj.float(), dim=-1)
        filled[idx] = True
    if tokens is None or not bool(filled.all()):
        missing = int((~filled).sum())
        raise DataError(f"retrieval evaluation: {missing} of {n_images} images were not produced by the loader; the dataset's length must equal len(img2txt)")
    return tokens, embeds


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
        raise ConfigError(f"run.k_test={k_test}; use an integer >= 1 (BLIP: 256 for COCO, 128 for Flickr30k)")
    if k_test > n_candidates:
        logger.warning("run.k_test=%d exceeds the %d candidates for %s; re-ranking all %d", k_test, n_candidates, direction, n_candidates)
        return n_candidates
    return int(k_test)


def retrieval_scores(
    model: nn.Module, feats: RetrievalFeatures, k_test: int, *, rank: int = 0, world: int = 1, pairs_per_batch: int = 1024
) -> dict[str, tuple[range, Tensor, Tensor]]:
    """This rank's re-ranked rows in both directions: ``{"i2t"|"t2i": (rows, top indices, scores)}``.

    The (image, text) pairs of both directions' rows are scored together
    (:func:`lavislite.tasks._rerank.rerank_both_directions`): grouped by image (each image's K/V projected once per
    ITM call of at most ``pairs_per_batch`` texts), a pair in both directions' top-k scored once. Same
    scores as BLIP's per-query loop up to float rounding.
    """
    sims = feats.sims()
    n_img, n_txt = sims.shape
    k_i, k_t = clamp_k(k_test, n_txt, "i2t"), clamp_k(k_test, n_img, "t2i")
    rows_i, rows_t = query_shard(n_img, rank, world), query_shard(n_txt, rank, world)
    i2t, t2i = rerank_both_directions(sims, feats, model, rows_i, k_i, rows_t, k_t, pairs_per_batch,
                                      desc="retrieval: re-rank (ITM, grouped by image)")
    return {"i2t": (rows_i, *i2t), "t2i": (rows_t, *t2i)}


# -- the task --------------------------------------------------------------------------------------
@registry.register_task("retrieval")
class RetrievalTask(TrainProgressMixin, BaseTask):
    """Train with ITC + ITM (``model(samples)``); evaluate with ITC top-k re-ranked by ITM."""

    RUN_DEFAULTS: ClassVar[dict] = {
        "k_test": 256,  # COCO 256, Flickr30k 128
        "itm_pairs_per_batch": 1024,  # query-candidate pairs per ITM forward while re-ranking
        "text_batch_size": 256,  # texts per encode_text call (BLIP: 256)
        "max_text_length": 35,
        "save_scores": False,  # also write <split>_scores.npz (both dense score matrices)
    }
    select_metric = "r_mean"
    result_id_key = "instance_id"
    requires = (RetrievalModel,)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._splits: dict[str, dict[str, Any]] = {}

    def train_step(self, model: nn.Module, samples: dict[str, Any]) -> dict[str, Any]:
        return super().train_step(model, self.with_progress(samples))

    def evaluation(self, model: nn.Module, data_loader: Any, split: str) -> list[dict]:
        dataset = loader_dataset(data_loader, split, needs=("text", "img2txt", "txt2img"))
        model = unwrap(model)
        n_img, n_txt = len(dataset.img2txt), len(dataset.text)
        img2txt = [list(_lookup(dataset.img2txt, i, "img2txt")) for i in range(n_img)]
        txt2img = [_lookup(dataset.txt2img, t, "txt2img") for t in range(n_txt)]
        self._splits[split] = {"n_img": n_img, "n_txt": n_txt, "img2txt": img2txt, "txt2img": txt2img}
        device = _device_of(model)
        with torch.inference_mode():
            feats = self.features(model, data_loader, dataset, device)
            per_dir = retrieval_scores(
                model, feats, int(self.run_key("k_test")), rank=dist.get_rank(), world=dist.get_world_size(),
                pairs_per_batch=int(self.run_key("itm_pairs_per_batch")),
            )
        results = []
        for name, (rows, idx, scores) in per_dir.items():
            for j, q in enumerate(rows):
                results.append({"instance_id": f"{name}:{q}", "direction": name, "query": q, "topk": idx[j].numpy(), "scores": scores[j].numpy()})
        return results

    def features(self, model: nn.Module, data_loader: Any, dataset: Any, device: torch.device) -> RetrievalFeatures:
        """Encode every text and image of the split (all of it on every rank, in dataset order)."""
        text_embeds, ids, atts = encode_texts(model, dataset.text, int(self.run_key("text_batch_size")), int(self.run_key("max_text_length")))
        loader = DataLoader(
            dataset, batch_size=data_loader.batch_size or 1, shuffle=False, num_workers=data_loader.num_workers,
            collate_fn=data_loader.collate_fn, pin_memory=torch.cuda.is_available(),
        )
        tokens, image_embeds = encode_images(model, loader, len(dataset.img2txt), device)
        return RetrievalFeatures(tokens, image_embeds, ids.to(device), atts.to(device), text_embeds.to(device))

    def after_evaluation(self, results: list[dict], split: str, output_dir: Path | None, epoch: Any) -> dict[str, float]:
        from lavislite.metrics import i2t_t2i_recall

        info = self._splits.get(split)
        if info is None:
            raise ConfigError(f"retrieval after_evaluation: split {split!r} was not evaluated by this task's evaluation()")
        mats = {}
        for name, n_q, n_c in (("i2t", info["n_img"], info["n_txt"]), ("t2i", info["n_txt"], info["n_img"])):
            rows = [r for r in results if r["direction"] == name]
            if len(rows) != n_q:
                raise DataError(f"retrieval {split}: gathered {len(rows)} {name} rows, expected {n_q}")
            mats[name] = dense_scores(
                n_q, n_c, [r["query"] for r in rows], np.stack([r["topk"] for r in rows]), np.stack([r["scores"] for r in rows])
            )
        metrics = i2t_t2i_recall(mats["i2t"], mats["t2i"], info["img2txt"], info["txt2img"])
        metrics["agg_metrics"] = metrics["r_mean"]
        if output_dir is not None and self.run_key("save_scores"):
            np.savez_compressed(Path(output_dir) / f"{split}_scores.npz", i2t=mats["i2t"].numpy(), t2i=mats["t2i"].numpy())
        return metrics


def _lookup(table: Any, i: int, name: str) -> Any:
    try:
        return table[i]
    except (KeyError, IndexError) as exc:
        raise DataError(f"retrieval evaluation: dataset.{name} has no entry for index {i}; indices must run 0..n-1") from exc


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")
