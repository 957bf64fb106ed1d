"""``lavislite demo capfilt``: BLIP's CapFilt ablation (paper Tables 1-2) in the shapes world, offline.

1. A small clean, human-style split (the world's train captions) and a noisy web split (:mod:`lavislite.demo.web`).
2. A tiny BLIP is pre-trained on the clean split; a captioner (captioning fine-tune) and a filter
   (retrieval fine-tune, ITC + ITM) are fine-tuned from it separately, as in the paper.
3. :mod:`lavislite.capfilt` bootstraps the web split: nucleus sampling (the paper's choice), beam search,
   the captioner alone (no filter) and the filter alone (no synthetic captions).
4. A new tiny BLIP is pre-trained from scratch on each arm's web data (the raw web included), with the same
   steps and seed, and evaluated zero-shot on the held-out test split: text->image and image->text R@1
   (ITC + ITM re-ranking) and captioning CIDEr (the pre-trained decoder, no prompt).
5. The filter's precision and recall at finding the noisy web texts are measured against the ground truth.

Every stage is the library's own machinery (:func:`lavislite.train.run` on project yamls, :func:`lavislite.capfilt.run`);
this module only wires them together and prints one table next to chance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lavislite.common.errors import ConfigError

# Sizes: the clean split is small (as COCO is next to the web), the web split large; "quick" is the test's run.
FULL = {"n_train": 500, "n_val": 4, "n_test": 100, "n_videos": 2, "n_web": 1600, "base_epochs": 16, "finetune_epochs": 3, "arm_iters": 400}
QUICK = {"n_train": 240, "n_val": 4, "n_test": 24, "n_videos": 2, "n_web": 400, "base_epochs": 12, "finetune_epochs": 2, "arm_iters": 120}
QUICK_ARMS = ("raw_web", "capfilt")  # the quick run (the test) compares the two ends only
NOISE_RATE = 0.5


@dataclass(frozen=True)
class Arm:
    """One pre-training data set of the ablation: the raw web, or a CapFilt run with these options."""

    name: str
    title: str
    capfilt: tuple[str, ...] | None  # None: the raw web shards


ARMS: tuple[Arm, ...] = (
    Arm("raw_web", "noisy web alt-texts (no CapFilt)", None),
    Arm("capfilt", "CapFilt: captioner (nucleus) + filter", ()),
    Arm("capfilt_beam", "CapFilt with beam-search captions", ("generation.method=beam",)),
    Arm("captioner_only", "captioner only (web + synthetic, unfiltered)", ("filtering.filter_web=false", "filtering.filter_synthetic=false")),
    Arm("filter_only", "filter only (filtered web, no synthetic)", ("filtering.captioner=false",)),
)


def run_capfilt_demo(out_dir: str | Path | None = None, *, quick: bool = False, seed: int = 0, threads: int | None = None,
                     world_dir: str | Path | None = None, arms: Sequence[str] | None = None, sizes: dict[str, int] | None = None,
                     echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the CapFilt ablation; returns (and writes as ``capfilt_metrics.json``) the table and every measurement.

    ``sizes`` replaces entries of ``QUICK``/``FULL`` (world and web sizes, epochs, pre-training steps per arm).
    """
    import os

    import torch

    from lavislite.capfilt import load_config
    from lavislite.capfilt import run as run_capfilt
    from lavislite.demo.run import (
        PROJECT_DIR,
        VOCAB_SIZE,
        _karpathy,
        _pretrain_data,
        _print,
        _quiet_console,
        _stage_weights,
        caption_baseline,
    )
    from lavislite.demo.web import generate_web, web_texts
    from lavislite.demo.world import all_texts, generate_world
    from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer
    from lavislite.train import run as run_project

    say = echo or _print
    unknown = set(sizes or {}) - set(FULL)
    if unknown:
        raise ConfigError(f"run_capfilt_demo: unknown sizes {sorted(unknown)}; known: {sorted(FULL)}")
    sizes = {**(QUICK if quick else FULL), **(sizes or {})}
    selected = _select(arms if arms is not None or not quick else QUICK_ARMS)
    out = Path(out_dir) if out_dir is not None else Path("output") / "demo_capfilt" / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    threads = threads or min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    torch.set_num_threads(int(threads))
    seconds: dict[str, float] = {}
    t_start = time.perf_counter()
    result: dict[str, Any] = {"out_dir": str(out.resolve()), "quick": quick, "seed": seed, "sizes": sizes, "noise_rate": NOISE_RATE}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        seconds[name] = round(time.perf_counter() - t0, 1)
        return value

    with _quiet_console(out / "demo_log.txt"):
        world = timed("world", lambda: generate_world(world_dir, seed=seed, **{k: sizes[k] for k in ("n_train", "n_val", "n_test", "n_videos")}))
        web = timed("web", lambda: generate_web(world, sizes["n_web"], NOISE_RATE, seed=seed))
        say(f"lavislite demo capfilt{' --quick' if quick else ''}: {out.resolve()} ({threads} thread(s))")
        say(f"[1] world: {world.counts['images_train']} clean images x 3 captions, {world.counts['images_test']} test images; "
            f"web: {sizes['n_web']} images, {len(web.noisy_keys)} noisy alt-texts ({NOISE_RATE:.0%}) in {len(web.shards)} shards")
        vocab_dir = out / "tokenizer"
        build_wordpiece_vocab([*all_texts(world), *web_texts(web)], VOCAB_SIZE, vocab_dir)
        vocab = len(init_tokenizer(vocab_dir))
        common = [f"model.tokenizer={vocab_dir.resolve()}", f"model.med_overrides.vocab_size={vocab}",
                  f"run.output_dir={(out / 'runs').resolve()}", f"run.seed={seed}", "run.num_workers=0", "run.log_freq=10"]

        def stage(name: str, yaml: Path, options: list[str], evaluate: bool = False) -> dict[str, Any]:
            summary = timed(name, lambda: run_project(str(yaml), [*common, f"run.run_name={name}", *options], evaluate=evaluate))
            return summary

        # 2. the pre-trained model the captioner and the filter start from, and their fine-tunes on the clean split
        base = stage(
            "base_pretrain", PROJECT_DIR / "pretrain.yaml", [*_pretrain_data(world), f"run.max_epoch={sizes['base_epochs']}", "run.warmup_steps=10"]
        )
        base_model = _stage_weights(Path(base["run_dir"]))
        ft = [f"model.checkpoint={base_model}", f"run.max_epoch={sizes['finetune_epochs']}", "run.warmup_steps=5"]
        cap = stage("captioner_finetune", PROJECT_DIR / "caption.yaml", [*_karpathy("coco_caption", gt=True)(world), *ft, "run.num_beams=2"])
        flt = stage("filter_finetune", PROJECT_DIR / "retrieval.yaml", [*_karpathy("coco_retrieval")(world), *ft])
        cap_model, flt_model = _stage_weights(Path(cap["run_dir"])), _stage_weights(Path(flt["run_dir"]))
        result["finetuned"] = {"captioner": cap["metrics"].get("test", {}), "filter": flt["metrics"].get("test", {})}
        say(
            f"[2] pre-trained on the clean split, fine-tuned captioner (CIDEr {cap['metrics']['test'].get('CIDEr', 0):.2f}) "
            f"and filter (t2i R@1 {flt['metrics']['test'].get('img_r1', 0):.1f}%) "
            f"({seconds['base_pretrain'] + seconds['captioner_finetune'] + seconds['filter_finetune']:.0f} s)"
        )

        # 3. CapFilt over the web shards, one run per arm
        web_spec = str(web.root / f"{{00000..{len(web.shards) - 1:05d}}}.tar")
        arm_shards: dict[str, str] = {}
        result["capfilt"] = {}
        for arm in selected:
            if arm.capfilt is None:
                arm_shards[arm.name] = web_spec
                continue
            cfg = load_config(_capfilt_config(web_spec, out / "capfilt" / arm.name, cap_model, flt_model, seed), list(arm.capfilt))
            res = timed(f"capfilt_{arm.name}", lambda cfg=cfg: run_capfilt(cfg))
            summary = res.summary
            quality = _noise_detection(cfg.output_dir, web.truth) if cfg.filter_web else None
            result["capfilt"][arm.name] = {
                "summary": {k: v for k, v in summary.items() if k != "histogram"},
                "filter_vs_truth": quality,
                "images_per_second": round(res.images_per_second, 1),
            }
            arm_shards[arm.name] = str(cfg.output_dir / "shards" / f"{{00000..{len(web.shards) - 1:05d}}}.tar")
            say(
                f"[3] CapFilt {arm.name}: kept {summary['kept_web']}/{summary['texts_in']} web, {summary['kept_synthetic']}/"
                f"{summary['synthetic_in']} synthetic texts"
                + (f"; filter precision {quality['precision']:.1%}, recall {quality['recall']:.1%} on the noisy web texts" if quality else "")
                + f" ({seconds[f'capfilt_{arm.name}']:.0f} s)"
            )

        # 4. pre-train from scratch on each arm, same steps and seed; evaluate zero-shot on the held-out test split
        result["arms"] = {}
        for arm in selected:
            kept = result["capfilt"].get(arm.name, {}).get("summary")
            if kept is not None and kept["kept_web"] + kept["kept_synthetic"] == 0:
                result["arms"][arm.name] = None  # nothing to pre-train on: reported, not trained
                say(f"[4] {arm.title}: the filter kept no text; no pre-training")
                continue
            pre = stage(
                f"pretrain_{arm.name}",
                PROJECT_DIR / "capfilt_pretrain_web.yaml",
                [f"datasets.pretrain_wds.build_info.shards={arm_shards[arm.name]}", f"run.max_iters={sizes['arm_iters']}"],
            )
            ckpt = _stage_weights(Path(pre["run_dir"]))
            ret = stage(
                f"eval_retrieval_{arm.name}",
                PROJECT_DIR / "retrieval.yaml",
                [*_karpathy("coco_retrieval")(world), f"model.checkpoint={ckpt}"],
                evaluate=True,
            )
            capt = stage(
                f"eval_caption_{arm.name}",
                PROJECT_DIR / "caption.yaml",
                [*_karpathy("coco_caption", gt=True)(world), f"model.checkpoint={ckpt}", "model.prompt=", "run.num_beams=2"],
                evaluate=True,
            )
            m = {
                "t2i_r1": ret["metrics"]["test"]["img_r1"],
                "i2t_r1": ret["metrics"]["test"]["txt_r1"],
                "CIDEr": capt["metrics"]["test"]["CIDEr"],
                "train_loss": {k: v for k, v in (pre.get("train") or {}).items() if "loss" in k},
            }
            result["arms"][arm.name] = m
            say(
                f"[4] {arm.title}: t2i R@1 {m['t2i_r1']:.1f}%, i2t R@1 {m['i2t_r1']:.1f}%, CIDEr {m['CIDEr']:.3f} "
                f"({seconds[f'pretrain_{arm.name}'] + seconds[f'eval_retrieval_{arm.name}'] + seconds[f'eval_caption_{arm.name}']:.0f} s)"
            )

        result["chance"] = {
            "t2i_r1": 100.0 / world.counts["images_test"],
            "i2t_r1": 100.0 / world.counts["images_test"],
            "CIDEr": caption_baseline(world)["caption_cider"],
        }
        seconds["total"] = round(time.perf_counter() - t_start, 1)
        result["seconds"] = seconds
        (out / "capfilt_metrics.json").write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    say("")
    say(format_table(result))
    say(f"\ntotal {seconds['total'] / 60:.1f} min; metrics {out / 'capfilt_metrics.json'}")
    return result


def _select(names: Sequence[str] | None) -> list[Arm]:
    if names is None:
        return list(ARMS)
    known = {a.name for a in ARMS}
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"unknown capfilt demo arm(s) {bad}; choose from {sorted(known)}")
    return [a for a in ARMS if a.name in set(names)]


def _capfilt_config(shards: str, out: Path, captioner: Path, filter_: Path, seed: int) -> dict[str, Any]:
    """The CapFilt job on the demo's fine-tuned models (model folders: weights, config, tokenizer, processors)."""
    return {
        "input": {"shards": [shards]},
        "captioner": {"model": str(captioner)},
        "filter": {"model": str(filter_)},
        "generation": {"method": "nucleus", "num_captions": 1, "max_length": 40, "min_length": 8},
        "output": {"dir": str(out), "formats": ["wds"]},
        "run": {"batch_size": 32, "device": "cpu", "seed": seed, "progress": False},
    }


def _noise_detection(out_dir: Path, truth: dict[str, str | None]) -> dict[str, Any]:
    from lavislite.capfilt.stats import noise_detection

    return noise_detection(sorted((out_dir / "shards").glob("*.tar")), truth)


def format_table(result: dict[str, Any]) -> str:
    """The ablation as text: one row per arm, chance last."""
    chance = result["chance"]
    rows = [("pre-training data", "t2i R@1", "i2t R@1", "CIDEr", "web kept", "synthetic kept", "filter P / R")]
    for arm in ARMS:
        if arm.name not in result["arms"]:
            continue
        m = result["arms"][arm.name] or {"t2i_r1": None, "i2t_r1": None, "CIDEr": None}
        c = result["capfilt"].get(arm.name)
        s = c["summary"] if c else None
        q = c["filter_vs_truth"] if c else None
        num = lambda v, f: "no data" if v is None else format(v, f)
        rows.append(
            (
                arm.title,
                num(m["t2i_r1"], ".1f") + "%" * (m["t2i_r1"] is not None),
                num(m["i2t_r1"], ".1f") + "%" * (m["i2t_r1"] is not None),
                num(m["CIDEr"], ".3f"),
                f"{s['kept_web']}/{s['texts_in']}" if s else "all",
                f"{s['kept_synthetic']}/{s['synthetic_in']}" if s else "-",
                f"{q['precision']:.0%} / {q['recall']:.0%}" if q else "-",
            )
        )
    rows.append(("chance", f"{chance['t2i_r1']:.1f}%", f"{chance['i2t_r1']:.1f}%", f"{chance['CIDEr']:.3f}", "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
