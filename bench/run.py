"""Run the benchmarks (one process per script, one after another) and write bench/RESULTS.md + JSON.

    python bench/run.py                 # every workload at the issue's sizes (long on 2 CPU cores)
    python bench/run.py --quick         # smoke test: tiny sizes, numbers meaningless
    python bench/run.py --only caption,retrieval
    python bench/run.py --report-only   # rebuild RESULTS.md from bench/results/*.json
    python bench/run.py --set retrieval="--images 16 --texts 80"   # extra flags for one script

Each script writes bench/results/<name>.json; this runner reads them back and renders one table
(workload, peer, seconds, ratio = peer / lavislite, outputs identical?, peak memory) and the targets.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPORT = HERE / "RESULTS.md"

# name -> (script, extra flags in --quick mode); scripts not using bench/_common.py get explicit small sizes
SCRIPTS: dict[str, tuple[str, list[str]]] = {
    "caption": ("caption.py", ["--quick"]),
    "vqa": ("vqa.py", ["--batch", "1", "--image-size", "64", "--k", "8"]),
    "retrieval": ("retrieval.py", ["--quick"]),
    "video_retrieval": ("video_retrieval.py", ["--videos", "2", "--frames", "1", "--k", "1", "--mem-k", "1"]),
    "train_step": ("train_step.py", ["--quick"]),
    "load": ("load.py", ["--quick"]),
    "caption_bf16": ("caption_bf16.py", ["--quick"]),
    "capfilt": ("capfilt.py", ["--quick"]),
    "serve": ("serve.py", ["--quick"]),
}


def run_scripts(names: list[str], quick: bool, extra: dict[str, list[str]]) -> dict[str, dict]:
    status = {}
    for name in names:
        script, quick_flags = SCRIPTS[name]
        cmd = [sys.executable, str(HERE / script), *(quick_flags if quick else []), *extra.get(name, [])]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        status[name] = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "command": " ".join(shlex.quote(c) for c in cmd[1:])}
        print(f"== {name}: exit {rc} after {status[name]['seconds']} s", flush=True)
    return status


# -- report ---------------------------------------------------------------------------------------
def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _s(x) -> str:
    return "–" if x is None else f"{x:.3g}" if x < 10 else f"{x:.1f}"


def _mb(peer, ours) -> str:
    if peer is None and ours is None:
        return "–"
    return f"{_s(peer) if peer is not None else '–'} / {_s(ours) if ours is not None else '–'} MiB"


def _tokens(tok: dict | None) -> str:
    if not tok:
        return "–"
    if tok["identical"] == tok["rows"]:
        return f"yes ({tok['rows']}/{tok['rows']} rows)"
    extra = f"; {tok['differ_other_length']} differ in length (4.15 vs 5.x beam rule)" if tok.get("differ_other_length") else ""
    bad = f"; {tok['differ_same_length']} same-length mismatches" if tok.get("differ_same_length") else ""
    return f"{tok['identical']}/{tok['rows']} rows{extra}{bad}"


def rows() -> list[dict]:
    """One dict per table row, from whatever JSON files exist."""
    out: list[dict] = []
    cap = _load("caption")
    labels = {
        "beam3": "captioning, beam 3, batch {b} (image → ids)",
        "greedy": "captioning, greedy, batch {b} (image → ids)",
        "beam3_decode": "captioning, beam 3, decoder only",
        "greedy_decode": "captioning, greedy, decoder only",
        "bf16": "captioning, beam 3, bf16 mode vs fp32",
        "beam3_415": "captioning, beam 3, batch {b}: lavislite ids vs literal 4.15 beam search",
    }
    if cap:
        for key, r in cap["runs"].items():
            same = _tokens(r.get("tokens"))
            if "peer_time" not in r:  # untimed reference (beam3_415)
                out.append({"key": f"caption.{key}", "workload": labels[key].format(b=cap["batch"]), "peer": r["peer"],
                            "peer_s": r.get("reference_s"), "ours_s": None, "ratio": "–", "same": same, "mem": "–"})
                continue
            if key == "bf16":
                same = f"{r['identical_captions_fraction']:.0%} captions identical (random weights)"
            out.append({"key": f"caption.{key}", "workload": labels[key].format(b=cap["batch"]), "peer": r["peer"],
                        "peer_s": r["peer_time"]["median_s"], "ours_s": r["lavislite_time"]["median_s"], "ratio": r["ratio"],
                        "same": same, "mem": _mb(r["peer_time"].get("peak_mb"), r["lavislite_time"].get("peak_mb"))})
    cb = _load("caption_bf16")
    if cb:
        m = cb["model"]
        trained = "demo run" if m["source"].startswith("demo run") else "trained here"
        out.append({"key": "caption.bf16_trained",
                    "workload": f"captioning, beam {cb['generate']['num_beams']}, bf16 mode vs fp32, demo-size captioner ({trained}), "
                                f"{cb['images']} test images, batch {cb['eval_batch']}",
                    "peer": "lavislite fp32, same weights", "peer_s": cb["fp32_time"]["median_s"], "ours_s": cb["bf16_time"]["median_s"],
                    "ratio": cb["ratio"], "mem": "–",
                    "same": f"{cb['identical_captions_fraction']:.0%} captions identical (trained model; "
                            f"{cb['identical_ignoring_wrapper_fraction']:.0%} ignoring the caption's wrapper phrase)"})
        full = cb.get("full_size_random_weights")
        if full:
            out.append(
                {
                    "key": "caption.bf16_full",
                    "workload": f"captioning, beam 3, bf16 mode vs fp32, full size (ViT-B/16 @ 384), batch {full['batch']}",
                    "peer": "lavislite fp32, same weights",
                    "peer_s": full["fp32_time"]["median_s"],
                    "ours_s": full["bf16_time"]["median_s"],
                    "ratio": full["ratio"],
                    "mem": "–",
                    "same": "n/a (random weights: speed only)",
                }
            )
    vqa = _load("vqa")
    if vqa:
        r = vqa["rank"]
        out.append(
            {
                "key": "vqa.rank",
                "workload": f"VQA answer ranking, {vqa['answer_list_size']} answers, k={vqa['k']}, batch {vqa['batch_questions']}",
                "peer": "per-question original rank_answer (in bench/vqa.py)",
                "peer_s": r["reference_seconds"],
                "ours_s": r["lavislite_seconds"],
                "ratio": r["speedup"],
                "same": "yes" if r["identical_answers"] else "NO",
                "mem": "–",
            }
        )
        g = vqa["generate_beam3"]
        out.append(
            {
                "key": "vqa.generate",
                "workload": f"VQA generation, beam 3, batch {vqa['batch_questions']}",
                "peer": "original recipe (states repeated per beam, cross K/V per step)",
                "peer_s": g["reference_seconds"],
                "ours_s": g["lavislite_seconds"],
                "ratio": g["speedup"],
                "same": "yes" if g["identical_ids"] else "NO",
                "mem": "–",
            }
        )
    ret = _load("retrieval")
    if ret:
        for key, label in (
            ("rerank", "retrieval ITM re-ranking"),
            ("rerank_bf16", "retrieval ITM re-ranking, lavislite bf16"),
            ("evaluation", "retrieval evaluation (encode + re-rank)"),
        ):
            r = ret["runs"].get(key)
            if r is None:
                continue
            same = ("yes" if ret["runs"]["rerank"]["identical_rankings"] else "NO") + " (rankings)"
            if key == "rerank_bf16":
                same = (
                    "yes (rankings)"
                    if r["identical_rankings"]
                    else f"rankings differ (bf16 ITM on random weights; top-1 agreement {r['top1_agreement']:.0%})"
                )
            out.append(
                {
                    "key": f"retrieval.{key}",
                    "workload": f"{label}, {ret['images']} img × {ret['texts']} txt, k={ret['k']}, both directions",
                    "peer": r["peer"],
                    "peer_s": r["peer_time"]["median_s"],
                    "ours_s": r["lavislite_time"]["median_s"],
                    "ratio": r["ratio"],
                    "same": same,
                    "mem": _mb(r["peer_time"].get("peak_mb"), r["lavislite_time"].get("peak_mb")),
                }
            )
    vid = _load("video_retrieval")
    if vid:
        size = vid.get("image_size", 384)
        shape = f"{vid['videos']} videos × {vid['frames']} frames @ {size}px, k={vid['k']}"
        rr = vid.get("rerank")
        if rr:
            same = "yes (rankings)" if rr["identical_rankings"] else "NO (rankings differ)"
            out.append(
                {
                    "key": "video_retrieval.rerank",
                    "workload": f"video ITM re-ranking (features given), {shape}, both directions",
                    "peer": rr["peer"],
                    "peer_s": rr["peer_time"]["median_s"],
                    "ours_s": rr["lavislite_time"]["median_s"],
                    "ratio": rr["ratio"],
                    "same": same,
                    "mem": "– (warm RSS; see the memory row)",
                }
            )
        if "blip_loop_s" in vid:
            e2e = vid.get("e2e", {})
            out.append(
                {
                    "key": "video_retrieval",
                    "workload": f"zero-shot video retrieval end to end (decode + encode + re-rank), {shape}",
                    "peer": e2e.get("peer", "BLIP per-query loop (in bench/video_retrieval.py)"),
                    "peer_s": vid["blip_loop_s"],
                    "ours_s": vid["lavislite_s"],
                    "ratio": vid["speedup"],
                    "same": "yes (rankings)" if vid["identical_rankings"] else "NO (rankings differ)",
                    "mem": _mb(e2e.get("peer_time", {}).get("peak_mb"), e2e.get("lavislite_time", {}).get("peak_mb")) if e2e else "–",
                }
            )
        mem = vid.get("rerank_memory")
        if mem:
            out.append(
                {
                    "key": "video_retrieval.memory",
                    "workload": f"video ITM re-ranking memory, {mem['videos']} videos × {mem['frames']} frames @ {mem['image_size']}px, k={mem['k']}",
                    "peer": "– (memory only)",
                    "peer_s": None,
                    "ours_s": mem["seconds"],
                    "ratio": "–",
                    "same": "–",
                    "mem": f"– / {mem['peak_mb']} MiB",
                }
            )
    tr = _load("train_step")
    if tr:
        runs, batch = tr["runs"], tr["batch"]
        cap = runs.get("caption")
        for amp in ("fp32", "bf16") if cap else ():
            r, loss = cap[amp], cap["loss_eval"]
            out.append(
                {
                    "key": f"train.caption_{amp}",
                    "workload": f"training step, caption fine-tune (LM), ViT-B/16 @ {cap['image_size']}, batch {batch}, "
                    f"{'fp32' if amp == 'fp32' else 'bf16 autocast both sides'}",
                    "peer": "transformers BlipForConditionalGeneration (same weights, ids, labels)",
                    "peer_s": r["peer_time"]["median_s"],
                    "ours_s": r["lavislite_time"]["median_s"],
                    "ratio": r["ratio"],
                    "same": f"loss {'equal' if loss['agree'] else 'DIFFERS'} (difference {loss['abs_diff']:.1e}, eval mode)",
                    "mem": _mb(r["peer_time"].get("peak_mb"), r["lavislite_time"].get("peak_mb")),
                }
            )
        pre = runs.get("pretrain")
        if pre:
            out.append(
                {
                    "key": "train.pretrain",
                    "workload": f"training step, pre-training (ITC+ITM+LM), ViT-B @ {pre['image_size']}, batch {batch}: bf16 autocast vs fp32",
                    "peer": "lavislite fp32 (transformers has no BLIP pre-training model)",
                    "peer_s": pre["fp32"]["median_s"],
                    "ours_s": pre["bf16"]["median_s"],
                    "ratio": pre["bf16_speedup"],
                    "same": (f"n/a (last losses fp32 {pre['last_loss']['fp32']}, bf16 {pre['last_loss']['bf16']})" if "last_loss" in pre else "n/a"),
                    "mem": _mb(pre["fp32"].get("peak_mb"), pre["bf16"].get("peak_mb")),
                }
            )
    load = _load("load")
    if load:
        r = load["runs"]["load"]
        out.append(
            {
                "key": "load",
                "workload": f"model load, official .pth ({r['checkpoint_mb']} MiB)",
                "peer": r["peer"],
                "peer_s": r["peer_time"]["median_s"],
                "ours_s": r["lavislite_time"]["median_s"],
                "ratio": r["ratio"],
                "same": "yes (weights)" if r["identical_weights"] else "NO",
                "mem": _mb(r["peer_time"].get("peak_mb"), r["lavislite_time"].get("peak_mb")),
            }
        )
        r = load["runs"]["import"]
        out.append(
            {
                "key": "import",
                "workload": "import time (fresh interpreter)",
                "peer": r["peer"],
                "peer_s": r["peer_time"]["median_s"],
                "ours_s": r["lavislite_time"]["median_s"],
                "ratio": r["ratio"],
                "same": "transformers not imported" if not r["lavislite_import_pulls_in_transformers"] else "pulls in transformers",
                "mem": "–",
            }
        )
    cf = _load("capfilt")
    if cf:
        out.append(
            {
                "key": "capfilt",
                "workload": f"CapFilt bootstrapping, {cf['images']} images, batch {cf['batch']}: captioner "
                f"(ViT-B/16 @ {cf['image_size']}, nucleus, 1 caption) + ITM filter, images/s "
                f"{cf['peer_time']['items_per_s']} vs {cf['lavislite_time']['items_per_s']}",
                "peer": cf["peer"],
                "peer_s": cf["peer_time"]["median_s"],
                "ours_s": cf["lavislite_time"]["median_s"],
                "ratio": cf["ratio"],
                "same": "n/a (nucleus draws depend on the batch)",
                "mem": _mb(cf["peer_time"].get("peak_mb"), cf["lavislite_time"].get("peak_mb")),
            }
        )
    return out


def partial_notes() -> list[str]:
    """Which rows were measured at less than the issue's size or with fewer repeats (from the JSON files)."""
    notes = []
    cap = _load("caption")
    if cap:
        if cap.get("batch", 8) < 8 or cap.get("quick"):
            notes.append(f"captioning: batch {cap.get('batch')}{' (quick)' if cap.get('quick') else ''} instead of 8")
        for key, r in cap["runs"].items():
            a, b = (r.get("peer_time") or {}).get("times_s"), (r.get("lavislite_time") or {}).get("times_s")
            if a and b and len(a) == len(b) > 1 and (max(a) > 2 * min(a) or max(b) > 2 * min(b)):
                per = ", ".join(f"{x / y:.2f}×" for x, y in zip(a, b))
                notes.append(
                    f"captioning {key}: load spike — rounds took {a} s (peer) vs {b} s (lavislite), per-round "
                    f"ratios {per}; the median ratio {r['ratio']}× is distorted"
                )
        missing = [w for w in ("beam3", "greedy", "beam3_decode", "greedy_decode", "bf16") if w not in cap["runs"]]
        notes.append(f"captioning: {cap.get('repeats')} timed repeat(s) per side; not run: {', '.join(missing) or 'none'}")
    ret = _load("retrieval")
    if ret and (ret["images"], ret["texts"], ret["k"]) != (64, 320, 16):
        notes.append(
            f"retrieval: scaled down to {ret['images']} images × {ret['texts']} texts, k={ret['k']} (the issue's size is "
            "64 × 320, k=16; same k/images and k/texts, 4× fewer texts per image, so the ratio is a lower bound)"
        )
    if ret and ret.get("repeats", 1) <= 1:
        notes.append("retrieval: one timed call per side (cold; no warm-up)" if ret.get("warmup") == 0 else "retrieval: one timed repeat")
    vid = _load("video_retrieval")
    if vid and "blip_loop_s" not in vid:
        notes.append("video retrieval: re-ranking memory only; the BLIP per-query loop baseline was not run")
    if vid and "blip_loop_s" in vid:
        if vid.get("image_size", 384) != 384:
            notes.append(
                f"video retrieval: timed rows scaled down to {vid['image_size']} px frames ({vid.get('tokens_per_video')} visual tokens "
                f"per video instead of 4,616 at 384 px; same videos/frames/k); the per-pair K/V projection the per-query loop repeats "
                "grows with the tokens, so the ratio is a lower bound of the 384 px one"
            )
        e2e, rr = vid.get("e2e", {}), vid.get("rerank", {})
        if e2e.get("repeats", 1) <= 1:
            notes.append("video retrieval end to end: one timed call per side (cold; it is the warm-up of the re-rank row)")
        if rr and rr.get("repeats", 1) < 3:
            notes.append(f"video retrieval re-rank: {rr['repeats']} timed round(s) per side (warm-up: the end-to-end round)")
        if vid.get("rerank_memory", {}).get("carried_over"):
            notes.append("video retrieval memory row: carried over from an earlier run (--skip-memory), not re-measured")
    tr = _load("train_step")
    if tr and (tr.get("quick") or tr.get("batch", 4) < 4 or tr.get("repeats", 3) < 3):
        notes.append(
            f"training step: batch {tr.get('batch')}, {tr.get('repeats')} timed step(s) per side{' (quick: tiny models)' if tr.get('quick') else ''}"
        )
    if tr and set(tr.get("runs", {})) != {"caption", "pretrain"}:
        notes.append(f"training step: only {', '.join(tr.get('runs', {})) or 'nothing'} run")
    cf = _load("capfilt")
    if cf and (cf.get("quick") or cf.get("repeats", 1) < 2):
        notes.append(f"capfilt: {cf.get('repeats')} timed round(s) per side{' (quick: tiny models)' if cf.get('quick') else ''}")
    if not _load("load"):
        notes.append("load/import: not run")
    elif _load("load").get("quick"):
        notes.append("load/import: quick (tiny model)")
    return notes


def machine_summary(machines: dict[str, dict]) -> str:
    loads = [m["load_average_1min"] for m in machines.values() if isinstance(m.get("load_average_1min"), (int, float))]
    by_cpu: dict[str, list[str]] = {}
    for name, m in machines.items():
        named = [str(v) for v in (m.get("cpu"), m.get("device")) if str(v).startswith(("cpu:", "cuda"))]
        if not named and m.get("device") == "cpu" and str(m.get("cpu", "")) not in ("", "x86_64"):
            named = [f"cpu: {m['cpu']}"]
        by_cpu.setdefault(named[0] if named else "cpu model not recorded", []).append(name)
    devices = [f"{cpu} ({', '.join(names)})" for cpu, names in by_cpu.items()]
    load = f"1-minute load average {min(loads):g}–{max(loads):g} when the scripts ended" if loads else "load not recorded"
    return (
        f"**Machine:** {'; '.join(devices) or 'unknown'} — 2 CPU cores, no GPU; {load} (a script's own threads "
        "count: about its thread count when nothing else ran; more means the cores were shared, see *Machines* and "
        "bench/NOTES.md). Compare the ratios, each measured within one process."
    )


def serve_section() -> list[str]:
    """bench/serve.py's rows: HTTP load with/without dynamic batching, vector search, end-to-end query; each
    with the 1/5/15-minute load averages before and after it (the machine was shared when they were taken)."""
    sv = _load("serve")
    if not sv:
        return []
    lines = ["", "## Serving (`python bench/serve.py`)", ""]
    if sv.get("quick"):
        lines += ["**`--quick` smoke run: numbers meaningless.**", ""]
    load = sv.get("load")
    if load:
        a = load["batching"]
        lines += [
            f"HTTP captioning on loopback: {a['clients']} concurrent clients for {a['seconds']:.0f} s of `POST /api/caption` "
            "(one 32 px shapes-world image; `blip_caption:tiny`, random weights, beam 3, up to 30 tokens); the server in its "
            f"own process with {a['server_torch_threads']} torch threads.",
            "",
            "| server | requests/s | p50 ms | p99 ms | ok / failed | mean batch | load avg before → after (1/5/15 min) |",
            "|---|---:|---:|---:|---|---:|---|",
        ]
        for key, label in (("no_batching", "no batching (`--max-batch 1`)"), ("batching", "dynamic batching (`--max-batch 16 --max-wait-ms 10`)")):
            r = load[key]
            lines.append(
                f"| {label} | {r['throughput_rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['requests_ok']} / {r['failed']} | "
                f"{r['mean_batch']} | {r['load_before']} → {r['load_after']} |"
            )
        lines += ["", f"Batching: **{load['throughput_ratio']}×** the throughput."]
    se = sv.get("search")
    if se:
        lines += [
            "",
            f"Vector search, {se['vectors']:,} synthetic unit vectors of dim {se['dim']} ({se.get('data', 'uniformly random')}), "
            f"top {se['k']}, {se.get('threads', '?')} thread(s) for torch and faiss (load {se['load_before']} → {se['load_after']}):",
            "",
            "| index | 1 query ms | 16 queries ms | build s | top 10 vs exact |",
            "|---|---:|---:|---:|---|",
        ]
        q1, q16 = se["queries_1"], se["queries_16"]
        lines.append(f"| torch matmul + topk (brute force) | {1000 * q1['torch_s']:.2f} | {1000 * q16['torch_s']:.2f} | – | exact |")
        lines.append(
            f"| faiss flat inner product | {1000 * q1['faiss_flat_s']:.2f} | {1000 * q16['faiss_flat_s']:.2f} | "
            f"{se['faiss_flat_build_s']} | {'identical' if q1['identical_top10'] and q16['identical_top10'] else 'DIFFERS'} |"
        )
        for kind in ("ivf", "hnsw"):
            if kind in se:
                r = se[kind]
                note = f" (earlier run, load {r['load']})" if r.get("carried_over") else ""
                lines.append(
                    f"| faiss {kind.upper()}{note} | {1000 * r['query_1_s']:.2f} | {1000 * r['queries_16_s']:.2f} | {r['build_s']} | "
                    f"recall@10 {r['recall_at_10']:.0%} |"
                )
        lines += ["", f"faiss flat vs torch: {q1['ratio']}× for one query, {q16['ratio']}× for 16."]
    for e in sv.get("e2e", []):
        lines += [
            "",
            f"End-to-end text query, {e['model']}, {e['vectors']:,}-vector index: ITC only {1000 * e['itc_only_s']:.0f} ms; "
            f"ITC + ITM re-ranking of {e['rerank_k']} (re-read + encode the 16 candidates, 16 ITM pairs) "
            f"{1000 * e['itc_itm16_s']:.0f} ms (median of {len(e['times_s']['itc_itm16'])}; load {e['load_before']} → {e['load_after']}).",
        ]
    return lines


TARGETS = [  # (row key, target ratio, what else must hold)
    ("caption.beam3", 2.0, "tokens identical where the 4.15 and 5.x beam rules agree"),
    ("caption.greedy", 1.3, "tokens identical"),
    ("retrieval.rerank", 5.0, "identical rankings"),
    ("vqa.rank", 3.0, "identical answers"),
    ("caption.bf16_trained", 3.0, ">= 95% identical captions on the demo's trained caption model"),
]


def render(status: dict | None = None) -> str:
    table = rows()
    by_key = {r["key"]: r for r in table}
    machines = {}
    for name in SCRIPTS:
        d = _load(name)
        if d:
            m = d.get("machine") or {k: d.get(k) for k in ("device", "cpu", "threads", "torch", "load_average_1min_at_end") if d.get(k) is not None}
            machines[name] = m
    quick = any((_load(n) or {}).get("quick") for n in SCRIPTS)
    lines = [
        "# lavislite benchmarks",
        "",
        "Generated by `python bench/run.py` (scripts in bench/, raw numbers in bench/results/*.json). "
        "Both sides run in the same process on the same weights, interleaved, median of the repeats; "
        "ratio = peer seconds / lavislite seconds (higher is better for lavislite).",
        "",
        machine_summary(machines),
        "",
    ]
    partial = partial_notes()
    if partial:
        lines += ["**Partial rows** (less than the issue's size or repeats; see *Machines* for each script's settings):", ""]
        lines += [f"- {n}" for n in partial] + [""]
    if quick:
        lines += ["**Some results below come from `--quick` smoke runs (tiny models): their numbers are meaningless.**", ""]
    lines += [
        "| workload | peer | peer s | lavislite s | ratio | outputs identical? | peak memory (peer / lavislite) |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in table:
        lines.append(f"| {r['workload']} | {r['peer']} | {_s(r['peer_s'])} | {_s(r['ours_s'])} | **{r['ratio']}×** | {r['same']} | {r['mem']} |")
    lines += ["", "## Targets", "", "| target | measured | met? |", "|---|---|---|"]
    for key, want, cond in TARGETS:
        r = by_key.get(key)
        if r is None:
            lines.append(f"| {key} ≥ {want}×, {cond} | not run | – |")
            continue
        ok = isinstance(r["ratio"], (int, float)) and r["ratio"] >= want and not r["same"].startswith("NO") and "mismatch" not in r["same"]
        if key == "caption.bf16_trained":
            agree = _load("caption_bf16")["identical_captions_fraction"]
            full = by_key.get("caption.bf16_full")
            speeds = f"{r['ratio']}× (demo size)" + (f", {full['ratio']}× (full size)" if full else "")
            lines.append(
                f"| caption.bf16 ≥ {want}×, {cond} | {speeds}; {agree:.0%} identical | "
                f"speed {'met' if isinstance(r['ratio'], (int, float)) and r['ratio'] >= want else 'NOT met'}"
                f"{'' if not full else ' at demo size, ' + ('met' if full['ratio'] >= want else 'NOT met') + ' at full size'}; "
                f"agreement {'met' if agree >= 0.95 else 'NOT met'} |"
            )
            continue
        else:
            verdict = "yes" if ok else "no"
        lines.append(f"| {key} ≥ {want}×, {cond} | {r['ratio']}×, {r['same']} | {verdict} |")
    lines += ["", "## Machines", ""]
    for name, m in machines.items():
        lines.append(f"- `{name}`: " + ", ".join(f"{k}={v}" for k, v in m.items()))
    if status:
        lines += ["", "## This run", ""] + [f"- `{n}`: exit {s['rc']}, {s['seconds']} s, `{s['command']}`" for n, s in status.items()]
    lines += serve_section()
    notes = HERE / "NOTES.md"
    if notes.is_file():
        lines += ["", notes.read_text(encoding="utf-8").strip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(SCRIPTS))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar='NAME="FLAGS"', help="extra flags for one script")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {list(SCRIPTS)}")
    extra = {}
    for item in args.set:
        name, _, flags = item.partition("=")
        extra[name] = shlex.split(flags)
    status = None if args.report_only else run_scripts(names, args.quick, extra)
    REPORT.write_text(render(status), encoding="utf-8")
    print(f"wrote {REPORT}")
    return 0 if status is None or all(s["rc"] == 0 for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
