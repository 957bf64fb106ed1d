"""Helpers of the task tests: a toy model implementing the retrieval protocol, tiny BLIP models, a
tokenizer built offline, and tiny datasets written in the real annotation formats."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

COLORS = ["red", "green", "blue", "yellow"]
SHAPES = ["square", "circle", "cross"]
RGB = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 230, 30)}
WORDS = COLORS + SHAPES + ["a", "picture", "of", "the", "is", "what", "color", "shape", "yes", "no", "there", "image", "left", "right"]


class ToyRetrieval(nn.Module):
    """The RetrievalModel contract (encode_image / encode_text / itc_similarity / itm_logits) in a few linear layers.

    ``itm_logits`` follows the grouped contract: ``r = texts / images`` text rows per image, contiguous.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.patch = nn.Linear(48, 8)
        self.emb = nn.Embedding(64, 8)
        self.proj_i = nn.Linear(8, 4)
        self.proj_t = nn.Linear(8, 4)
        self.mix = nn.Linear(8, 8)

    def encode_image(self, image: torch.Tensor):
        b = image.shape[0]
        tokens = torch.tanh(self.patch(image.reshape(b, -1, 48)))
        return tokens, self.proj_i(tokens[:, 0])

    def encode_text(self, texts, max_length: int = 35):
        ids = torch.zeros(len(texts), max_length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, t in enumerate(texts):
            toks = [2] + [5 + sum(map(ord, w)) % 59 for w in t.split()][: max_length - 1]
            ids[i, : len(toks)] = torch.tensor(toks)
            mask[i, : len(toks)] = 1
        return self.proj_t(self._text(ids, mask)), ids, mask

    def _text(self, ids, mask):
        e = self.emb(ids) * mask.unsqueeze(-1)
        return e.sum(1) / mask.sum(1, keepdim=True)

    def itc_similarity(self, image_feats, text_feats):
        return F.normalize(image_feats.float(), dim=-1) @ F.normalize(text_feats.float(), dim=-1).t()

    def itm_logits(self, image_tokens, input_ids, attention_mask, image_atts=None):
        b = image_tokens.shape[0]
        r = input_ids.shape[0] // b
        assert r * b == input_ids.shape[0], "texts must be a multiple of the images"
        img = self.mix(image_tokens).amax(1).repeat_interleave(r, 0)
        return torch.tanh((img * self._text(input_ids, attention_mask)).sum(-1)) * 3


def tokenizer_dir(root: Path) -> Path:
    from lavislite.models.tokenizer import build_wordpiece_vocab

    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=8)) for _ in range(300)]
    build_wordpiece_vocab(texts, 120, root)
    return root


def draw(color: str, shape: str, size: int = 32, seed: int = 0) -> Image.Image:
    """One coloured shape on a dark background."""
    rng = np.random.default_rng(seed)
    arr = np.full((size, size, 3), 20, dtype=np.uint8) + rng.integers(0, 10, (size, size, 3), dtype=np.uint8)
    c = RGB[color]
    q = size // 4
    if shape == "square":
        arr[q : 3 * q, q : 3 * q] = c
    elif shape == "circle":
        yy, xx = np.mgrid[:size, :size]
        arr[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < q * q] = c
    else:
        arr[size // 2 - 2 : size // 2 + 2, :] = c
        arr[:, size // 2 - 2 : size // 2 + 2] = c
    return Image.fromarray(arr)


def write_images(root: Path, n: int, prefix: str) -> list[dict[str, Any]]:
    """``n`` images under root/images; returns their (colour, shape, relative path, coco id)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        color, shape = COLORS[i % len(COLORS)], SHAPES[(i // len(COLORS)) % len(SHAPES)]
        image_id = 1000 + i if prefix != "train" else 5000 + i
        rel = f"images/COCO_{prefix}2014_{image_id:012d}.jpg"
        draw(color, shape, seed=i).save(root / rel, quality=95)
        out.append({"color": color, "shape": shape, "image": rel, "id": image_id})
    return out


def captions(img: dict) -> list[str]:
    return [f"a {img['color']} {img['shape']}", f"a picture of a {img['color']} {img['shape']}"]


def write_karpathy(root: Path, n_train: int = 8, n_eval: int = 4) -> dict[str, Path]:
    """COCO Karpathy files: train (one record per caption), val/test (captions lists) and *_gt.json."""
    paths = {}
    train = write_images(root, n_train, "train")
    recs = [{"image": im["image"], "caption": c, "image_id": f"coco_{im['id']}"} for im in train for c in captions(im)]
    paths["train"] = _dump(root / "coco_karpathy_train.json", recs)
    for split in ("val", "test"):
        ims = write_images(root, n_eval, split)
        paths[split] = _dump(root / f"coco_karpathy_{split}.json", [{"image": im["image"], "caption": captions(im)} for im in ims])
        gt = {
            "annotations": [{"image_id": im["id"], "caption": c, "id": k} for k, (im, c) in enumerate((im, c) for im in ims for c in captions(im))],
            "images": [{"id": im["id"]} for im in ims],
        }
        paths[f"{split}_gt"] = _dump(root / f"coco_karpathy_{split}_gt.json", gt)
    return paths


def _dump(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def write_vqa(root: Path) -> dict[str, Path]:
    """BLIP VQA files (10 answers per question) and answer_list.json."""
    paths, qid = {}, 1
    answers_all = set()
    for split, n, prefix in (("train", 8, "train"), ("val", 4, "val")):
        ims = write_images(root, n, prefix)
        recs = []
        for im in ims:
            for q, a in ((f"what color is the {im['shape']}?", im["color"]), ("what shape is it?", im["shape"])):
                answers = [a] * 8 + [COLORS[(COLORS.index(a) + 1) % 4] if a in COLORS else "square"] * 2
                recs.append({"question_id": qid, "question": q, "answer": answers, "image": im["image"], "dataset": "vqa"})
                answers_all.update(answers)
                qid += 1
        paths[split] = _dump(root / f"vqa_{split}.json", recs)
    paths["answer_list"] = _dump(root / "answer_list.json", sorted(answers_all))
    return paths


def write_nlvr(root: Path) -> dict[str, Path]:
    """NLVR2 files: ``{"images": [left, right], "sentence", "label": "True"|"False"}``."""
    paths = {}
    for split, n in (("train", 8), ("dev", 4)):
        ims = write_images(root, n + 1, f"nlvr{split}")
        recs = []
        for i in range(n):
            left, right = ims[i], ims[i + 1]
            same = left["color"] == right["color"]
            recs.append({"images": [left["image"], right["image"]], "sentence": f"both images are {left['color']}", "label": str(same)})
            recs.append({"images": [left["image"], left["image"]], "sentence": f"both images are {left['color']}", "label": "True"})
        paths[split] = _dump(root / f"nlvr_{split}.json", recs)
    return paths
