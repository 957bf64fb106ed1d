"""The demo's pictures: loss curves, metrics next to chance, a gallery of test images with their
generated captions and VQA answers, and a text-to-image retrieval example.

Everything is drawn from the files the runs wrote (``metrics.jsonl``, ``test_captions.json``,
``test_vqa_result.json``, ``test_scores.npz``) and the world's annotations: no extra inference.
matplotlib is imported inside the functions (never at import time) with the Agg backend.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

LOSS_KEYS = ("loss", "loss_itc", "loss_itm", "loss_lm")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def draw_all(result: Any, world: Any) -> dict[str, Path]:
    """Draw every picture the run's files allow into ``result.out_dir``; returns name -> path."""
    out = Path(result.out_dir)
    files: dict[str, Path] = {}
    curves = {s: Path(d) / "metrics.jsonl" for s, d in result.run_dirs.items() if (Path(d) / "metrics.jsonl").is_file()}
    curves = {s: p for s, p in curves.items() if train_records(p)}
    if curves:
        files["loss_curves"] = plot_loss_curves(curves, out / "loss_curves.png")
    if result.table:
        files["metrics"] = plot_metrics(result.table, out / "metrics.png")
    caption_dir = Path(result.run_dirs["caption"]) if "caption" in result.run_dirs else None
    vqa_dir = Path(result.run_dirs["vqa"]) if "vqa" in result.run_dirs else None
    if caption_dir is not None or vqa_dir is not None:
        files["gallery"] = plot_gallery(world, caption_dir, vqa_dir, out / "gallery.png")
    if "retrieval" in result.run_dirs and (Path(result.run_dirs["retrieval"]) / "test_scores.npz").is_file():
        files["retrieval"] = plot_retrieval(world, Path(result.run_dirs["retrieval"]) / "test_scores.npz", out / "retrieval.png")
    return files


# -- loss curves -----------------------------------------------------------------------------------
def train_records(metrics_jsonl: Path) -> list[dict[str, Any]]:
    """The ``kind: train`` records of a run's ``metrics.jsonl`` (step, lr, loss, loss_*)."""
    recs = []
    for line in Path(metrics_jsonl).read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") == "train":
            recs.append(rec)
    return recs


def plot_loss_curves(runs: dict[str, Path], path: Path) -> Path:
    """One panel per training stage: the total loss and its parts against the optimizer step."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(runs), figsize=(3.6 * len(runs), 3.0), squeeze=False)
    for ax, (stage, jsonl) in zip(axes[0], runs.items()):
        recs = train_records(jsonl)
        steps = [r["step"] for r in recs]
        for key in LOSS_KEYS:
            ys = [r.get(key) for r in recs]
            if any(isinstance(y, (int, float)) for y in ys):
                ax.plot(steps, [y if isinstance(y, (int, float)) else np.nan for y in ys], label=key,
                        lw=2 if key == "loss" else 1, alpha=1 if key == "loss" else 0.8)
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("training loss")
    fig.suptitle("lavislite demo: training losses")
    return _save(fig, path)


def plot_metrics(table: list[dict[str, Any]], path: Path) -> Path:
    """Each test metric next to its chance level (and floor)."""
    plt = _plt()
    rows = [r for r in table if r.get("chance") is not None]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rows)), 3.4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["value"] for r in rows], 0.4, label="result")
    ax.bar(x + 0.2, [r["chance"] for r in rows], 0.4, label="chance / baseline", color="0.7")
    for i, r in enumerate(rows):
        if r.get("floor") is not None:
            ax.plot([i - 0.4, i + 0.4], [r["floor"]] * 2, "r--", lw=1)
    ax.set_xticks(x, [f"{r['task']}\n{r['metric']}" for r in rows], fontsize=7)
    ax.set_ylabel("fraction (CIDEr / BLEU: score)")
    ax.legend(fontsize=8)
    ax.set_title("test metrics vs chance (red dashes: floors)")
    return _save(fig, path)


# -- gallery ---------------------------------------------------------------------------------------
def _image_number(rel: str) -> int:
    return int(Path(rel).stem.split("_")[-1])


def plot_gallery(world: Any, caption_dir: Path | None, vqa_dir: Path | None, path: Path, n: int = 8) -> Path:
    """Test images with the generated caption and VQA answers (prediction vs truth)."""
    plt = _plt()
    test = _read_json(world.files["coco_karpathy_test"])
    images = [row["image"] for row in test][:n]
    captions: dict[int, str] = {}
    if caption_dir is not None and (caption_dir / "test_captions.json").is_file():
        captions = {int(r["image_id"]): r["caption"] for r in _read_json(caption_dir / "test_captions.json")}
    qa: dict[str, list[str]] = {}
    if vqa_dir is not None and (vqa_dir / "test_vqa_result.json").is_file():
        pred = {int(r["question_id"]): r["answer"] for r in _read_json(vqa_dir / "test_vqa_result.json")}
        for q in _read_json(world.files["vqa_test"]):
            if q["image"] in images and int(q["question_id"]) in pred:
                truth = max(set(q["answer"]), key=q["answer"].count)
                p = pred[int(q["question_id"])]
                qa.setdefault(q["image"], []).append(f"Q: {q['question']} A: {p} {'(right)' if p == truth else f'(truth: {truth})'}")
    cols = 4
    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 5.8 * rows), squeeze=False)  # room for ~7 text lines
    for ax, rel in zip(axes.flat, images):
        ax.imshow(Image.open(world.root / rel).convert("RGB"), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        cap = captions.get(_image_number(rel))
        text = [textwrap.fill(f"caption: {cap}", 48)] if cap is not None else []
        text += [textwrap.fill(t, 48) for t in qa.get(rel, [])[:2]]
        ax.set_xlabel("\n".join(text), fontsize=8, loc="left")
        ax.set_title(Path(rel).stem, fontsize=8)
    for ax in list(axes.flat)[len(images):]:
        ax.axis("off")
    fig.suptitle("held-out test images: generated captions and VQA answers", fontsize=12)
    fig.tight_layout()
    return _save(fig, path)


def plot_retrieval(world: Any, scores_npz: Path, path: Path, queries: int = 3, k: int = 5) -> Path:
    """Text -> image retrieval: for a few test captions, the top-k test images (the true one framed green)."""
    plt = _plt()
    test = _read_json(world.files["coco_karpathy_test"])
    texts, txt2img = [], []
    for i, row in enumerate(test):
        for c in row["caption"]:
            texts.append(c)
            txt2img.append(i)
    t2i = np.load(scores_npz)["t2i"]
    picks = [round(j * (len(texts) - 1) / max(1, queries - 1)) for j in range(queries)]
    fig, axes = plt.subplots(queries, k, figsize=(2.2 * k, 2.7 * queries), squeeze=False)
    for row_axes, t in zip(axes, picks):
        top = np.argsort(-t2i[t])[:k]
        for rank, (ax, img) in enumerate(zip(row_axes, top), start=1):
            ax.imshow(Image.open(world.root / test[int(img)]["image"]).convert("RGB"), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            hit = int(img) == txt2img[t]
            for side in ax.spines.values():
                side.set_edgecolor("green" if hit else "0.8")
                side.set_linewidth(4 if hit else 1)
            ax.set_xlabel(f"#{rank}{' (match)' if hit else ''}", fontsize=8)
        row_axes[0].set_title(textwrap.fill(f'"{texts[t]}"', 90), fontsize=8, loc="left")
    fig.suptitle("text -> image retrieval on held-out test images (top 5; green = the described image)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
