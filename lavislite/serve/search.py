"""Search over an :class:`~lavislite.serve.index.ImageIndex`, and zero-shot classification: BLIP's recipe.

Text -> image: the query's normalised ITC embedding against the index (faiss), then the best
``rerank_k`` candidates re-scored by the ITM head; the final score is ``ITM logit + cosine`` (BLIP's),
or the cosine alone with ``rerank_k=0``. Image -> text is the same over the index's texts; image ->
image is cosine only (ITM scores image-text pairs). ITM pairs go through the retrieval tasks' grouped
scorer (:func:`lavislite.tasks.rerank.itm_pair_logits`), which projects each image's tokens once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lavislite.common.errors import ConfigError, DataError
from lavislite.serve.build import check_same_model, embed_images, embed_texts
from lavislite.serve.identity import LoadedModel, ModelSpec, load_spec
from lavislite.serve.index import ImageIndex
from lavislite.serve.sources import ImageReader

MAX_ITM_PAIRS = 64  # texts per grouped ITM call


def can_rerank(model: Any) -> bool:
    """Whether ``model`` has the retrieval protocol's ITM side (``encode_image``, ``encode_text``, ``itm_logits``)."""
    return all(hasattr(model, m) for m in ("encode_image", "encode_text", "itm_logits"))


def _check_k(k: int, rerank_k: int) -> None:
    if int(k) < 1:
        raise ConfigError(f"k={k}: use an integer >= 1")
    if int(rerank_k) < 0:
        raise ConfigError(f"rerank_k={rerank_k}: use an integer >= 0 (0 = cosine only)")


def _itm(model: Any, tokens: torch.Tensor, ids: torch.Tensor, atts: torch.Tensor, cand: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    from lavislite.tasks.rerank import itm_pair_logits

    with torch.inference_mode():
        return itm_pair_logits(model, tokens, ids, atts, cand, text, MAX_ITM_PAIRS)


def _rank(pool_sim: np.ndarray, pool_rows: np.ndarray, itm: torch.Tensor | None, k: int) -> list[tuple[int, float, float, float | None]]:
    """``(row, score, itc, itm)`` of the best ``k`` of one query's pool, best first."""
    out = []
    for j in range(len(pool_rows)):
        if pool_rows[j] < 0:  # faiss pads with -1 when an approximate index finds fewer than asked
            continue
        m = None if itm is None else float(itm[j])
        out.append((int(pool_rows[j]), float(pool_sim[j]) + (m or 0.0), float(pool_sim[j]), m))
    out.sort(key=lambda r: -r[1])
    return out[:k]


def _rank_pool(sim: np.ndarray, rows: np.ndarray, itm: torch.Tensor | None, pool: int, k: int) -> list:
    """BLIP re-ranks a query's top ``pool`` by ITM; when ``k`` asks for more, the rest follow by cosine."""
    if itm is None:
        return _rank(sim, rows, None, k)
    head = _rank(sim[:pool], rows[:pool], itm[:pool], k)
    return head + _rank(sim[pool:], rows[pool:], None, max(0, k - len(head)))


@dataclass
class Searcher:
    """An index with the model that made it. Build with :meth:`open`."""

    index: ImageIndex
    lm: LoadedModel

    @classmethod
    def open(cls, index: str | ImageIndex, model: LoadedModel | ModelSpec | None = None, *, device: str | None = None,
             dtype: str = "fp32") -> Searcher:
        """The index at ``index`` with ``model`` (default: the one recorded in the index, loaded now).
        Raises :class:`ConfigError` naming both models when ``model`` did not make the index."""
        idx = index if isinstance(index, ImageIndex) else ImageIndex.open(index)
        if model is None:
            model = ModelSpec.from_json(idx.model)
        lm = model if isinstance(model, LoadedModel) else load_spec(model, device, dtype)
        check_same_model(idx.model, lm, str(idx.path))
        return cls(idx, lm)

    def _hit(self, row: int, rank: int, score: float, itc: float, itm: float | None) -> dict[str, Any]:
        e = self.index.entries[row]
        hit = {"rank": rank, "id": e.id, "row": row, "score": score, "itc": itc}
        if itm is not None:
            hit["itm"] = itm
        return hit

    def text_to_image(self, queries: Sequence[str], k: int = 10, rerank_k: int | None = None) -> list[list[dict[str, Any]]]:
        """Each query's best ``k`` images: ``{rank, id, row, score, itc[, itm]}``; ``rerank_k`` (default
        ``k``) candidates are re-scored by ITM (0: cosine only, also when the model has no ITM head)."""
        rerank_k = k if rerank_k is None else rerank_k
        _check_k(k, rerank_k)
        if not queries or not all(isinstance(q, str) and q.strip() for q in queries):
            raise DataError("give non-empty text queries")
        model = self.lm.model
        rerank = rerank_k > 0 and can_rerank(model) and len(self.index) > 0
        texts = [self.lm.txt(q) for q in queries]
        with torch.inference_mode():
            if rerank:
                proj, ids, atts = model.encode_text(texts)
                qv = torch.nn.functional.normalize(proj.float(), dim=-1).cpu().numpy()
            else:
                qv = embed_texts(self.lm, queries)
        sims, rows = self.index.search_vectors(qv, max(k, rerank_k) if rerank else k)
        itm, pool = None, min(rerank_k, rows.shape[1])
        if rerank:
            pairs = [(q, j) for q in range(len(queries)) for j in range(pool) if rows[q, j] >= 0]
            cand = sorted({int(rows[q, j]) for q, j in pairs})  # each candidate is read and encoded once
            slot = {r: i for i, r in enumerate(cand)}
            logits = _itm(model, self._tokens(cand), ids, atts, torch.tensor([slot[int(rows[q, j])] for q, j in pairs]),
                          torch.tensor([q for q, _ in pairs]))
            itm = torch.full(rows.shape, float("nan"))
            itm[[q for q, _ in pairs], [j for _, j in pairs]] = logits
        return [[self._hit(r, i + 1, s, c, m) for i, (r, s, c, m) in
                 enumerate(_rank_pool(sims[q], rows[q], None if itm is None else itm[q], pool, k))] for q in range(len(queries))]

    def _tokens(self, rows: Sequence[int], batch_size: int = 16) -> torch.Tensor:
        """ViT tokens of indexed images (re-read from disk: the index keeps only their embeddings)."""
        reader = ImageReader()
        out = []
        try:
            for s in range(0, len(rows), batch_size):
                pils = [reader(self.index.entries[r].path) for r in rows[s : s + batch_size]]
                with torch.inference_mode():
                    out.append(self.lm.model.encode_image(self.lm.images(pils))[0])
        finally:
            reader.close()
        return torch.cat(out)

    def image_to_image(self, images: Sequence[Any], k: int = 10) -> list[list[dict[str, Any]]]:
        """Each PIL image's ``k`` nearest indexed images by ITC cosine."""
        _check_k(k, 0)
        sims, rows = self.index.search_vectors(embed_images(self.lm, list(images)), k)
        return [[self._hit(r, i + 1, s, c, m) for i, (r, s, c, m) in enumerate(_rank(sims[q], rows[q], None, k))]
                for q in range(len(images))]

    def image_to_text(self, images: Sequence[Any], k: int = 10, rerank_k: int | None = None) -> list[list[dict[str, Any]]]:
        """Each PIL image's best ``k`` of the index's texts: ``{rank, text, score, itc[, itm]}`` (ITM re-ranked as text->image)."""
        rerank_k = k if rerank_k is None else rerank_k
        _check_k(k, rerank_k)
        model = self.lm.model
        rerank = rerank_k > 0 and can_rerank(model)
        x = self.lm.images(list(images))
        with torch.inference_mode():
            if rerank:
                tokens, proj = model.encode_image(x)
                qv = torch.nn.functional.normalize(proj.float(), dim=-1).cpu().numpy()
            else:
                qv = embed_images(self.lm, list(images))
        sims, rows = self.index.search_texts(qv, max(k, rerank_k) if rerank else k)
        out = []
        for b in range(len(images)):
            itm = None
            if rerank:
                pool = [int(r) for r in rows[b, :rerank_k]]
                with torch.inference_mode():
                    _, ids, atts = model.encode_text([self.lm.txt(self.index.texts[r]) for r in pool])
                itm = torch.full((rows.shape[1],), float("nan"))
                itm[: len(pool)] = _itm(model, tokens[b : b + 1], ids, atts, torch.zeros(len(pool), dtype=torch.long),
                                        torch.arange(len(pool)))
            ranked = _rank_pool(sims[b], rows[b], itm, min(rerank_k, rows.shape[1]), k)
            hits = []
            for i, (r, s, c, m) in enumerate(ranked):
                hit = {"rank": i + 1, "text": self.index.texts[r], "score": s, "itc": c}
                if m is not None:
                    hit["itm"] = m
                hits.append(hit)
            out.append(hits)
        return out


def classify(lm: LoadedModel, images: Sequence[Any], labels: Sequence[str], *, rerank: bool = False,
             template: str = "{}") -> list[list[dict[str, Any]]]:
    """Zero-shot classification of PIL images over caller-given ``labels``: each image's labels, best first,
    as ``{label, score, itc, prob[, itm]}``. ``itc`` is the cosine of image and ``template.format(label)``;
    ``prob`` the softmax of cosines over the labels at the model's learned ITC temperature (or 0.01);
    with ``rerank`` every label is also scored by ITM and ``score = ITM logit + cosine`` (BLIP's retrieval score)."""
    labels = [str(lab) for lab in labels]
    if not labels or any(not lab.strip() for lab in labels) or len(set(labels)) != len(labels):
        raise DataError("give at least one label, each non-empty and distinct (e.g. labels=['a dog', 'a cat'])")
    if "{}" not in template:
        raise ConfigError(f"template {template!r} has no '{{}}' where the label goes (e.g. 'a picture of {{}}')")
    model = lm.model
    if rerank and not can_rerank(model):
        raise ConfigError(f"{lm.spec.label} has no ITM head (itm_logits); classify without rerank or use blip_image_text_matching")
    texts = [lm.txt(template.format(lab)) for lab in labels]
    x = lm.images(list(images))
    with torch.inference_mode():
        if can_rerank(model):
            tokens, iproj = model.encode_image(x)
            tproj, ids, atts = model.encode_text(texts)
            iv = torch.nn.functional.normalize(iproj.float(), dim=-1)
            tv = torch.nn.functional.normalize(tproj.float(), dim=-1)
        else:
            iv = torch.from_numpy(embed_images(lm, list(images)))
            tv = torch.from_numpy(embed_texts(lm, texts))
        sims = iv.cpu() @ tv.cpu().t()  # (B, L)
        temp = getattr(model, "temp", None)  # BLIP's learned ITC temperature, clamped as in training
        temp = min(max(float(temp), 0.001), 0.5) if isinstance(temp, (torch.Tensor, float)) else 0.01
        probs = (sims / temp).softmax(-1)
        itm = None
        if rerank:
            b, n = sims.shape
            itm = _itm(model, tokens, ids, atts, torch.arange(b).repeat_interleave(n), torch.arange(n).repeat(b)).view(b, n)
    out = []
    for i in range(sims.shape[0]):
        rows = []
        for j, lab in enumerate(labels):
            r = {"label": lab, "score": float(sims[i, j]) + (float(itm[i, j]) if itm is not None else 0.0),
                 "itc": float(sims[i, j]), "prob": float(probs[i, j])}
            if itm is not None:
                r["itm"] = float(itm[i, j])
            rows.append(r)
        out.append(sorted(rows, key=lambda r: -r["score"]))
    return out
