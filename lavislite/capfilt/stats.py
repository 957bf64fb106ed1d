"""Per-shard statistics, their merge into a run summary, and the plot of the ITM score distributions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

COUNTS = ("images", "images_kept", "texts_in", "synthetic_in", "kept_web", "kept_synthetic", "corrupt_images")


def new_stats(name: str, source: str, bins: int, threshold: float) -> dict[str, Any]:
    return {
        "shard": name, "source": source, "threshold": threshold, "error": None,
        **{k: 0 for k in COUNTS}, "corrupt": [],
        "histogram": {"edges": [round(i / bins, 6) for i in range(bins + 1)], "web": [0] * bins, "synthetic": [0] * bins},
    }


def add_scores(stats: dict[str, Any], source: str, scores: Iterable[float]) -> None:
    counts = stats["histogram"][source]
    bins = len(counts)
    for s in scores:
        counts[min(int(s * bins), bins - 1)] += 1


def merge(all_stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run summary: summed counts and histograms, rates, and every unreadable shard and image by name."""
    if not all_stats:
        return {"shards": 0}
    first = all_stats[0]["histogram"]
    hist = {"edges": first["edges"], "web": [0] * len(first["web"]), "synthetic": [0] * len(first["web"])}
    total = {k: 0 for k in COUNTS}
    for s in all_stats:
        for k in COUNTS:
            total[k] += s[k]
        for src in ("web", "synthetic"):
            hist[src] = [a + b for a, b in zip(hist[src], s["histogram"][src])]
    rate = lambda a, b: (a / b) if b else None
    return {
        "shards": len(all_stats), **total,
        "kept_web_rate": rate(total["kept_web"], total["texts_in"]),
        "kept_synthetic_rate": rate(total["kept_synthetic"], total["synthetic_in"]),
        "unreadable_shards": [{"shard": s["shard"], "source": s["source"], "error": s["error"]} for s in all_stats if s["error"]],
        "corrupt": [dict(c, shard=s["shard"]) for s in all_stats for c in s["corrupt"]],
        "threshold": all_stats[0]["threshold"], "histogram": hist,
    }


def plot(summary: dict[str, Any], path: Path) -> Path:
    """Web and synthetic ITM match-probability histograms with the threshold (PNG, no timestamp: same data, same bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = summary["histogram"]
    edges = hist["edges"]
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
    for src, color in (("web", "tab:orange"), ("synthetic", "tab:blue")):
        total = sum(hist[src])
        if total:
            ax.stairs([c / total for c in hist[src]], edges, label=f"{src} texts ({total})", color=color, linewidth=1.8)
    ax.axvline(summary["threshold"], color="black", linestyle="--", linewidth=1, label=f"threshold {summary['threshold']:g}")
    ax.set_xlabel("ITM match probability")
    ax.set_ylabel("fraction of texts")
    ax.set_title("CapFilt filter scores")
    ax.legend(loc="upper center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the console."""
    if not summary.get("shards"):
        return "capfilt: no shards"
    pct = lambda r: "-" if r is None else f"{100 * r:.1f}%"
    lines = [
        f"capfilt: {summary['shards']} shards, {summary['images']} images ({summary['images_kept']} with a kept text)",
        f"  web texts kept       {summary['kept_web']}/{summary['texts_in']} ({pct(summary['kept_web_rate'])})",
        f"  synthetic texts kept {summary['kept_synthetic']}/{summary['synthetic_in']} ({pct(summary['kept_synthetic_rate'])})",
    ]
    if summary["corrupt_images"]:
        lines.append(f"  corrupt images: {summary['corrupt_images']} (named in summary.json)")
    for s in summary["unreadable_shards"]:
        lines.append(f"  unreadable shard {s['shard']}: {s['error']}")
    return "\n".join(lines)


def read_stats(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def noise_detection(output_shards: Sequence[Path], truth: dict[str, Any]) -> dict[str, Any]:
    """The filter as a noise detector, against ground truth (``truth``: web sample key -> noise label, None if clean).

    A web text counts as removed unless the output shards keep it (an image whose texts were all removed is
    absent from them). Precision: the share of removed texts that were noise; recall: the share of noisy
    texts removed; also the recall per noise label and the share of clean texts kept.
    """
    import tarfile

    kept: set[str] = set()
    for shard in output_shards:
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(m).read())
                    if any(t["source"] == "web" and t["kept"] for t in meta["texts"]):
                        kept.add(m.name[: -len(".json")])
    noisy = {k for k, v in truth.items() if v is not None}
    removed = set(truth) - kept
    tp = len(removed & noisy)
    labels = sorted({str(v) for v in truth.values() if v is not None})
    return {
        "web_texts": len(truth), "noisy": len(noisy), "removed": len(removed), "removed_noisy": tp,
        "precision": tp / len(removed) if removed else None, "recall": tp / len(noisy) if noisy else None,
        "clean_kept": len((set(truth) - noisy) & kept) / max(1, len(set(truth) - noisy)),
        "recall_by_label": {lab: len({k for k in removed if truth[k] == lab}) / max(1, sum(v == lab for v in truth.values())) for lab in labels},
    }
