"""Zero-shot video retrieval: lavislite's video_retrieval task vs BLIP's per-query loop, same weights.

A BLIP retrieval model (random weights; the COCO model's architecture, ViT-B/16 at ``--image-size``, 384 by
default), ``--videos`` generated mp4 clips (OpenCV) with one caption each, ``--frames`` frames per video,
top-``--k`` re-ranking in both directions. Two timed rows, the sides interleaved (peer, lavislite, ...),
median of the rounds:

* ``e2e`` (decode included): peer = BLIP ``eval_retrieval_video.py``: decode the videos (the dataset's
  decoder), encode texts and frames, then one ITM call per query (the video's concatenated frame tokens
  repeated k times for video -> text, the k videos' tokens gathered per text for text -> video);
  lavislite = ``VideoRetrievalTask.evaluation`` on a DataLoader of the same dataset (decode, encode,
  pooled/grouped re-ranking of lavislite/tasks/rerank.py). One round each (``--e2e-repeats``): it also
  serves as both paths' warm-up for the next row.
* ``rerank`` (features given, taken from the peer's e2e run): ``bench/retrieval.py``'s per-query loop vs
  ``retrieval_scores`` (directions v2t/t2v), ``--repeats`` rounds.

Rankings (argsort of every row of both score matrices) must be identical; the largest score difference is
reported. Plus the peak memory of lavislite's ITM re-ranking for 8 frames at 384 with ``--mem-k``
(``--skip-memory`` keeps the previous JSON's measurement, marked as carried over).

    python bench/video_retrieval.py [--videos 16 --frames 8 --k 8 --mem-k 16] [--image-size 384] [--threads 1]

Writes bench/results/video_retrieval.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402
import retrieval as R  # noqa: E402  (the per-query loop of image retrieval: a video is an image of T*N tokens)

COLORS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0), (255, 255, 255), (0, 128, 255)]
NAMES = ["red", "green", "blue", "yellow", "purple", "cyan", "white", "orange"]


def make_videos(root: Path, n: int, n_frames: int = 32, size: int = 96) -> list[dict]:
    import cv2

    (root / "videos").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        color, name = COLORS[i % len(COLORS)], NAMES[i % len(NAMES)]
        direction = ["right", "left", "down", "up"][(i // len(COLORS)) % 4]
        vw = cv2.VideoWriter(str(root / "videos" / f"clip{i:03d}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 8, (size, size))
        for t in range(n_frames):
            frame = np.full((size, size, 3), 20 + 5 * (i % 7), dtype=np.uint8)
            p = int(t * (size - 24) / (n_frames - 1))
            x, y = {"right": (p, 36), "left": (size - 24 - p, 36), "down": (36, p), "up": (36, size - 24 - p)}[direction]
            frame[y : y + 24, x : x + 24] = color
            vw.write(frame)
        vw.release()
        records.append({"clip_name": f"clip{i:03d}", "caption": f"a {name} square moves {direction} number {i}"})
    with open(root / "test.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return records


def build_model(vocab_dir: Path, device: torch.device, image_size: int = 384):
    from lavislite.common.config import model_type_config
    from lavislite.common.registry import registry
    from lavislite.models.tokenizer import init_tokenizer

    cls = registry.get_model_class("blip_retrieval")
    cfg = model_type_config(cls, "coco", {"load_finetuned": False, "load_pretrained": False, "image_size": image_size})
    torch.manual_seed(0)
    return cls.from_config(cfg.model, tokenizer=init_tokenizer(vocab_dir)).to(device).eval()


def dataset(root: Path, frames: int, image_size: int = 384):
    from lavislite.common.registry import registry

    b = registry.get_builder_class("msrvtt_retrieval")
    cfg = b.default_config()
    cfg.build_info.annotations.test.path = str(root / "test.jsonl")
    cfg.build_info.videos.storage = str(root / "videos")
    cfg.vis_processor.eval.num_frames = frames
    cfg.vis_processor.eval.image_size = image_size
    return b(cfg, root / "cache").build_datasets()["test"]


def run_lavislite(model, ds, k: int, out: Path, device: torch.device, batch: int = 4, tokens_budget: int = 147712) -> dict:
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader

    from lavislite.tasks.retrieval import VideoRetrievalTask

    task = VideoRetrievalTask(OmegaConf.create({"run": {**VideoRetrievalTask.RUN_DEFAULTS, "k_test": k, "save_scores": True,
                                                        "itm_visual_tokens_per_batch": tokens_budget}}))
    loader = DataLoader(ds, batch_size=batch, collate_fn=ds.collater, num_workers=0)
    out.mkdir(parents=True, exist_ok=True)
    metrics = task.after_evaluation(task.evaluation(model, loader, "test"), "test", out, 0)
    scores = np.load(out / "test_scores.npz")
    return {"metrics": metrics, "v2t": scores["v2t"], "t2v": scores["t2v"]}


@torch.inference_mode()
def run_blip_loop(model, ds, k: int, device: torch.device, batch: int = 4) -> dict:
    """BLIP eval_retrieval_video.py: decode + encode texts and videos, then one ITM call per query."""
    from lavislite.tasks.retrieval import RetrievalFeatures

    proj_t, ids, atts = model.encode_text(ds.text, max_length=35)
    feats, embeds = [], []
    for s in range(0, len(ds), batch):
        video = torch.stack([ds[i]["video"] for i in range(s, min(s + batch, len(ds)))]).to(device)  # decode
        b, t = video.shape[:2]
        tok, proj = model.encode_image(video.flatten(0, 1))
        feats.append(tok.view(b, t * tok.shape[1], -1))
        embeds.append(F.normalize(proj.float().view(b, t, -1).mean(1), dim=-1))
    f = RetrievalFeatures(torch.cat(feats), torch.cat(embeds), ids, atts, F.normalize(proj_t.float(), dim=-1))
    v2t, t2v = R.per_query_loop(model, f, k)
    return {"v2t": v2t.numpy(), "t2v": t2v.numpy(), "feats": f}


@torch.inference_mode()
def rerank_lavislite(model, feats, k: int, pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    from lavislite.tasks.retrieval import dense_scores, retrieval_scores

    out = retrieval_scores(model, feats, k, pairs_per_batch=pairs, directions=("v2t", "t2v"))
    n_v, n_t = feats.image_tokens.shape[0], feats.text_ids.shape[0]
    return dense_scores(n_v, n_t, *out["v2t"]), dense_scores(n_t, n_v, *out["t2v"])


def same_rankings(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(np.argsort(-a, 1, kind="stable"), np.argsort(-b, 1, kind="stable")))


class PeakRSS:
    """Peak resident set size growth (bytes) while the block runs, sampled every 5 ms."""

    @staticmethod
    def rss() -> int:
        import os

        with open("/proc/self/statm") as f:  # Linux: resident pages are the second field
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.base = self.peak = self.rss()
        self.stop = False
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while not self.stop:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.growth = self.peak - self.base


@torch.inference_mode()
def rerank_memory(model, device: torch.device, frames: int, k: int, n: int, tokens_budget: int) -> dict:
    """Peak memory of lavislite's ITM re-ranking only (features given), both directions, k candidates."""
    from lavislite.tasks.retrieval import RetrievalFeatures, retrieval_scores

    torch.manual_seed(0)
    n_tok = frames * (384 // 16) ** 2 + frames
    feats = RetrievalFeatures(
        image_tokens=torch.randn(n, n_tok, 768, device=device),
        image_feats=F.normalize(torch.randn(n, 256, device=device), dim=-1),
        text_ids=torch.randint(1000, 2000, (n, 35), device=device),
        text_atts=torch.ones(n, 35, dtype=torch.long, device=device),
        text_feats=F.normalize(torch.randn(n, 256, device=device), dim=-1),
    )
    pairs = max(1, tokens_budget // n_tok)
    feature_bytes = feats.image_tokens.numel() * 4
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        retrieval_scores(model, feats, k, pairs_per_batch=pairs, directions=("v2t", "t2v"))
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        how = "torch.cuda.max_memory_allocated above the stored features"
    else:
        t0 = time.perf_counter()
        with PeakRSS() as m:
            retrieval_scores(model, feats, k, pairs_per_batch=pairs, directions=("v2t", "t2v"))
        peak = m.growth
        how = "peak RSS growth (/proc/self/statm, 5 ms sampling) above the stored features"
    return {"frames": frames, "image_size": 384, "tokens_per_video": n_tok, "k": k, "videos": n, "pairs_per_itm_call": pairs,
            "peak_mb": round(peak / 2**20, 1), "stored_features_mb": round(feature_bytes / 2**20, 1), "seconds": round(time.perf_counter() - t0, 2),
            "how": how}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--image-size", type=int, default=384, help="ViT input size of the timed rows (the memory row is always 384)")
    p.add_argument("--mem-k", type=int, default=16)
    p.add_argument("--tokens-budget", type=int, default=147712, help="run.itm_visual_tokens_per_batch")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per side of the re-rank row (median)")
    p.add_argument("--e2e-repeats", type=int, default=1, help="timed rounds per side of the end-to-end row")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--skip-memory", action="store_true", help="keep the previous JSON's re-ranking memory measurement")
    p.add_argument("--memory-only", action="store_true", help="only the re-ranking memory measurement")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from lavislite.models.tokenizer import build_wordpiece_vocab

    out = HERE / "results" / "video_retrieval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.is_file() else {}

    def save(result: dict) -> None:  # after every phase, so a long run that is stopped keeps what it measured
        out.write_text(json.dumps(result, indent=2) + "\n")

    def memory(model) -> dict:
        if args.skip_memory and previous.get("rerank_memory"):
            return {**previous["rerank_memory"], "carried_over": "measured by an earlier run (--skip-memory)"}
        return rerank_memory(model, device, 8, args.mem_k, max(args.mem_k, args.videos), args.tokens_budget)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = make_videos(root, args.videos)
        build_wordpiece_vocab([r["caption"] for r in records] * 5, 200, root / "vocab")
        result: dict = {"device": str(device), "cpu": C._cpu_name(), "threads": torch.get_num_threads(),
                        "torch": torch.__version__, "videos": args.videos, "frames": args.frames, "image_size": args.image_size, "k": args.k,
                        "model": f"blip_retrieval coco architecture (ViT-B/16 {args.image_size}), random weights, fp32"}
        if args.memory_only:
            model = build_model(root / "vocab", device)
            result["rerank_memory"] = memory(model)
            print("rerank memory:", result["rerank_memory"], flush=True)
            save(result)
            return
        model = build_model(root / "vocab", device, args.image_size)
        tokens_per_video = args.frames * ((args.image_size // 16) ** 2 + 1)
        pairs = max(1, args.tokens_budget // tokens_per_video)
        result["tokens_per_video"] = tokens_per_video
        if args.skip_baseline:
            ds = dataset(root, args.frames, args.image_size)
            t0 = time.perf_counter()
            run_lavislite(model, ds, args.k, root / "out", device, tokens_budget=args.tokens_budget)
            result["lavislite_s"] = round(time.perf_counter() - t0, 2)
        else:
            # end to end, decode included: a fresh dataset per call so each side decodes the videos itself
            e2e = C.interleaved({
                "peer": lambda: run_blip_loop(model, dataset(root, args.frames, args.image_size), args.k, device),
                "lavislite": lambda: run_lavislite(model, dataset(root, args.frames, args.image_size), args.k, root / "out", device,
                                                   tokens_budget=args.tokens_budget),
            }, args.e2e_repeats, 0, device)
            ref, ours = e2e["peer"]["output"], e2e["lavislite"]["output"]
            result["e2e"] = {
                "peer": "BLIP eval_retrieval_video.py per-query loop (decode + encode + loop, in bench/video_retrieval.py)",
                "peer_time": C.side(e2e["peer"]), "lavislite_time": C.side(e2e["lavislite"]),
                "ratio": round(e2e["peer"]["median_s"] / e2e["lavislite"]["median_s"], 2),
                "identical_rankings": all(same_rankings(ours[d], ref[d]) for d in ("v2t", "t2v")),
                "max_abs_score_diff": float(max(np.abs(ours[d] - ref[d]).max() for d in ("v2t", "t2v"))),
                "vid_r1": ours["metrics"]["vid_r1"], "warmup": 0, "repeats": args.e2e_repeats,
            }
            # legacy keys (bench/run.py reads the e2e row from them)
            result.update(blip_loop_s=result["e2e"]["peer_time"]["median_s"], lavislite_s=result["e2e"]["lavislite_time"]["median_s"],
                          speedup=result["e2e"]["ratio"], identical_rankings=result["e2e"]["identical_rankings"],
                          max_abs_score_diff=result["e2e"]["max_abs_score_diff"])
            print("e2e:", result["e2e"], flush=True)
            save(result)
            feats = ref["feats"]
            with torch.inference_mode():
                rr = C.interleaved({"peer": lambda: R.per_query_loop(model, feats, args.k),
                                    "lavislite": lambda: rerank_lavislite(model, feats, args.k, pairs)}, args.repeats, 0, device)
            (pv, pt), (ov, ot) = rr["peer"]["output"], rr["lavislite"]["output"]
            result["rerank"] = {
                "peer": "BLIP per-query loop (bench/retrieval.py per_query_loop on the video features)",
                "peer_time": C.side(rr["peer"]), "lavislite_time": C.side(rr["lavislite"]),
                "ratio": round(rr["peer"]["median_s"] / rr["lavislite"]["median_s"], 2),
                "identical_rankings": same_rankings(ov.numpy(), pv.numpy()) and same_rankings(ot.numpy(), pt.numpy()),
                "max_abs_score_diff": float(max((ov - pv).abs().max(), (ot - pt).abs().max())),
                "peer_itm_calls": 2 * args.videos, "itm_pairs": 2 * args.videos * args.k, "lavislite_unique_pairs": R.unique_pairs(pv, pt),
                "pairs_per_itm_call": pairs, "warmup": "the e2e round (same shapes, both paths)", "repeats": args.repeats,
                "memory_how": C.memory_how(device) + " (first timed round, after the e2e warm-up)",
            }
            print("rerank:", {k: v for k, v in result["rerank"].items()}, flush=True)
            save(result)
        result["load_average_1min_at_end"] = round(__import__("os").getloadavg()[0], 2)
        result["rerank_memory"] = memory(model)
        print("rerank memory:", result["rerank_memory"], flush=True)
    save(result)
    print("wrote", out)


if __name__ == "__main__":
    main()
