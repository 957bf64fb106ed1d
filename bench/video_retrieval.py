"""Zero-shot video retrieval: lavislite's video_retrieval task vs BLIP's per-query loop, full-size model.

A ViT-B/16 384 BLIP retrieval model (random weights; the COCO model's architecture), ``--videos`` generated
mp4 clips of ``--frames`` frames each (decode included in both timings), one caption per video, top-``--k``
re-ranking. The baseline is BLIP's ``eval_retrieval_video.py`` evaluation loop written out here: one
query at a time, the video's concatenated frame tokens repeated k times (video -> text) and the k videos'
tokens gathered per text (text -> video). Reports seconds for both, whether the rankings agree, the largest
score difference, and the peak memory of lavislite's ITM re-ranking for 8 frames at 384 with ``--mem-k``
(CUDA max allocated on GPU, else peak RSS growth sampled from /proc by a thread).

    python bench/video_retrieval.py [--videos 16 --frames 8 --k 8 --mem-k 16]

Writes bench/results/video_retrieval.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
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


def build_model(vocab_dir: Path, device: torch.device):
    from lavislite.common.config import model_type_config
    from lavislite.common.registry import registry
    from lavislite.models.tokenizer import init_tokenizer

    cls = registry.get_model_class("blip_retrieval")
    cfg = model_type_config(cls, "coco", {"load_finetuned": False, "load_pretrained": False})
    torch.manual_seed(0)
    return cls.from_config(cfg.model, tokenizer=init_tokenizer(vocab_dir)).to(device).eval()


def dataset(root: Path, frames: int):
    from lavislite.common.registry import registry

    b = registry.get_builder_class("msrvtt_retrieval")
    cfg = b.default_config()
    cfg.build_info.annotations.test.path = str(root / "test.jsonl")
    cfg.build_info.videos.storage = str(root / "videos")
    cfg.vis_processor.eval.num_frames = frames
    return b(cfg, root / "cache").build_datasets()["test"]


def run_lavislite(model, ds, k: int, out: Path, device: torch.device, batch: int = 4, tokens_budget: int = 147712) -> dict:
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader

    from lavislite.tasks.video_retrieval import VideoRetrievalTask

    task = VideoRetrievalTask(OmegaConf.create({"run": {**VideoRetrievalTask.RUN_DEFAULTS, "k_test": k, "save_scores": True,
                                                        "itm_visual_tokens_per_batch": tokens_budget}}))
    loader = DataLoader(ds, batch_size=batch, collate_fn=ds.collater, num_workers=0)
    out.mkdir(parents=True, exist_ok=True)
    metrics = task.after_evaluation(task.evaluation(model, loader, "test"), "test", out, 0)
    scores = np.load(out / "test_scores.npz")
    return {"metrics": metrics, "v2t": scores["v2t"], "t2v": scores["t2v"]}


@torch.inference_mode()
def run_blip_loop(model, ds, k: int, device: torch.device, batch: int = 4) -> dict:
    """BLIP eval_retrieval_video.py: encode texts and videos, then one ITM call per query."""
    texts = ds.text
    proj_t, ids, atts = model.encode_text(texts, max_length=35)
    t_emb = F.normalize(proj_t, dim=-1)
    feats, embeds = [], []
    for s in range(0, len(ds), batch):
        video = torch.stack([ds[i]["video"] for i in range(s, min(s + batch, len(ds)))]).to(device)
        b, t = video.shape[:2]
        tok, proj = model.encode_image(video.flatten(0, 1))
        feats.append(tok.view(b, t * tok.shape[1], -1))
        embeds.append(F.normalize(proj.view(b, t, -1).mean(1), dim=-1))
    video_feats, v_emb = torch.cat(feats), torch.cat(embeds)
    sims = v_emb @ t_emb.t()
    v2t = torch.full(sims.shape, -100.0, device=device)
    for i in range(sims.shape[0]):
        top_sim, top = sims[i].topk(k)
        enc = video_feats[i].repeat(k, 1, 1)
        v2t[i, top] = model.itm_logits(enc, ids[top], atts[top], torch.ones(enc.shape[:2], dtype=torch.long, device=device)) + top_sim
    t2v = torch.full(sims.t().shape, -100.0, device=device)
    for j in range(sims.shape[1]):
        top_sim, top = sims[:, j].topk(k)
        enc = video_feats[top]
        t2v[j, top] = model.itm_logits(enc, ids[j].repeat(k, 1), atts[j].repeat(k, 1), torch.ones(enc.shape[:2], dtype=torch.long, device=device)) + top_sim
    return {"v2t": v2t.float().cpu().numpy(), "t2v": t2v.float().cpu().numpy()}


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
    from lavislite.tasks.retrieval import RetrievalFeatures
    from lavislite.tasks.video_retrieval import video_retrieval_scores

    torch.manual_seed(0)
    n_tok = frames * (384 // 16) ** 2 + frames
    feats = RetrievalFeatures(
        image_tokens=torch.randn(n, n_tok, 768, device=device),
        image_embeds=F.normalize(torch.randn(n, 256, device=device), dim=-1),
        text_ids=torch.randint(1000, 2000, (n, 35), device=device),
        text_atts=torch.ones(n, 35, dtype=torch.long, device=device),
        text_embeds=F.normalize(torch.randn(n, 256, device=device), dim=-1),
    )
    pairs = max(1, tokens_budget // n_tok)
    feature_bytes = feats.image_tokens.numel() * 4
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        video_retrieval_scores(model, feats, k, pairs_per_batch=pairs)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        how = "torch.cuda.max_memory_allocated above the stored features"
    else:
        t0 = time.perf_counter()
        with PeakRSS() as m:
            video_retrieval_scores(model, feats, k, pairs_per_batch=pairs)
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
    p.add_argument("--mem-k", type=int, default=16)
    p.add_argument("--tokens-budget", type=int, default=147712, help="run.itm_visual_tokens_per_batch")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--memory-only", action="store_true", help="only the re-ranking memory measurement")
    args = p.parse_args()
    device = torch.device(args.device)
    from lavislite.models.tokenizer import build_wordpiece_vocab

    out = HERE / "results" / "video_retrieval.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(result: dict) -> None:  # after every phase, so a long run that is stopped keeps what it measured
        out.write_text(json.dumps(result, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = make_videos(root, args.videos)
        build_wordpiece_vocab([r["caption"] for r in records] * 5, 200, root / "vocab")
        model = build_model(root / "vocab", device)
        result: dict = {"device": str(device), "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                        "torch": torch.__version__, "videos": args.videos, "frames": args.frames, "image_size": 384, "k": args.k,
                        "model": "blip_retrieval coco architecture (ViT-B/16 384), random weights, fp32"}
        if args.memory_only:
            result["rerank_memory"] = rerank_memory(model, device, 8, args.mem_k, max(args.mem_k, args.videos), args.tokens_budget)
            print("rerank memory:", result["rerank_memory"], flush=True)
            save(result)
            return
        ds = dataset(root, args.frames)
        t0 = time.perf_counter()
        ours = run_lavislite(model, ds, args.k, root / "out", device, tokens_budget=args.tokens_budget)
        result["lavislite_s"] = round(time.perf_counter() - t0, 2)
        print(f"lavislite: {result['lavislite_s']} s  vid_r1 {ours['metrics']['vid_r1']:.1f}", flush=True)
        save(result)
        if not args.skip_baseline:
            ds = dataset(root, args.frames)  # fresh dataset: the baseline decodes again
            t0 = time.perf_counter()
            ref = run_blip_loop(model, ds, args.k, device)
            result["blip_loop_s"] = round(time.perf_counter() - t0, 2)
            result["speedup"] = round(result["blip_loop_s"] / result["lavislite_s"], 2)
            same = all(
                np.array_equal(np.argsort(-ours[d], 1, kind="stable"), np.argsort(-ref[d], 1, kind="stable")) for d in ("v2t", "t2v")
            )
            result["identical_rankings"] = bool(same)
            result["max_abs_score_diff"] = float(max(np.abs(ours[d] - ref[d]).max() for d in ("v2t", "t2v")))
            print(f"BLIP loop: {result['blip_loop_s']} s  identical rankings {same}  max |diff| {result['max_abs_score_diff']:.2e}", flush=True)
            save(result)
        result["rerank_memory"] = rerank_memory(model, device, 8, args.mem_k, max(args.mem_k, args.videos), args.tokens_budget)
        print("rerank memory:", result["rerank_memory"], flush=True)
    save(result)
    print("wrote", out)


if __name__ == "__main__":
    main()
