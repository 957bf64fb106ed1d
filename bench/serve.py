"""Serving benchmarks: HTTP load with and without dynamic batching, faiss vs brute-force search, end-to-end query.

    python bench/serve.py                  # 16 clients x 30 s per mode, 100k vectors, demo-size e2e query
    python bench/serve.py --quick          # smoke test (numbers meaningless)

1. **Load**: ``lavislite serve`` runs in its own process on a free 127.0.0.1 port with the tiny captioner
   (blip_caption:tiny, random weights, a WordPiece vocabulary of the shapes world; beam 3, max 30 tokens);
   ``--clients`` threads each POST one shapes-world image to /api/caption in a loop for ``--seconds``.
   Once with ``--max-batch 1`` (no batching), once with ``--max-batch 16 --max-wait-ms 10``. Reported:
   requests/s, p50/p99 latency, failures, the mean batch the server formed, and the load average.
2. **Search**: ``--vectors`` clustered unit vectors (dim 256, BLIP's ITC size); one query and 16 queries,
   top 10: faiss exact inner product vs ``torch`` matmul + topk (same results checked), plus faiss IVF and
   HNSW (build time, latency, recall@10 against the exact top 10).
3. **End-to-end query** (text -> image, the BLIP recipe): text encoding, faiss top candidates over
   ``--vectors`` embeddings, re-reading and encoding the 16 candidates, ITM on 16 pairs; demo-size model
   (64-wide ViT/BERT at 32 px) and, with ``--full``, full-size BLIP (ViT-B/16 at 384 px, random weights).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C


def _uptime() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _world(folder: Path, n: int, size: int) -> list[Path]:
    import random

    from lavislite.demo.shapes import render_scene, sample_scene, save_image

    folder.mkdir(parents=True, exist_ok=True)
    rng, nprng = random.Random(0), np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"scene{i:03d}.png"
        save_image(render_scene(sample_scene(rng), size, nprng), p)
        paths.append(p)
    return paths


def _tiny_vocab(folder: Path) -> Path:
    import random

    from lavislite.demo.shapes import sample_scene
    from lavislite.demo.world import make_captions, make_questions
    from lavislite.models.tokenizer import build_wordpiece_vocab

    rng = random.Random(0)
    texts = []
    for _ in range(300):
        scene = sample_scene(rng)
        texts += make_captions(scene, rng, 2) + [qa[0] for qa in make_questions(scene, rng, 2)]
    build_wordpiece_vocab(texts, 200, folder)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- 1. load ---------------------------------------------------------------------------------------
def load_test(tmp: Path, clients: int, seconds: float, max_batch: int, threads: int) -> dict:
    import requests

    from lavislite.api import load_model
    from lavislite.common.checkpoint import save_checkpoint
    from lavislite.models.tokenizer import init_tokenizer

    vocab = tmp / "vocab"
    if not (vocab / "vocab.txt").is_file():
        _tiny_vocab(vocab)
    n_vocab = len(init_tokenizer(vocab))
    ckpt = tmp / "caption_tiny.pth"
    if not ckpt.is_file():
        torch.manual_seed(0)
        save_checkpoint(load_model("blip_caption", "tiny", tokenizer=str(vocab), **{"model.med_overrides.vocab_size": n_vocab}), ckpt)
    image = _world(tmp / "world", 1, 32)[0].read_bytes()
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), LAVISLITE_OFFLINE="1")
    cmd = [sys.executable, "-m", "lavislite", "serve", "--caption", "blip_caption:tiny", "--caption-checkpoint", str(ckpt),
           "--tokenizer", str(vocab), "--option", f"med_overrides.vocab_size={n_vocab}", "--dtype", "fp32",
           "--host", "127.0.0.1", "--port", str(port), "--max-batch", str(max_batch), "--max-wait-ms", "10"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if requests.get(url + "/api/info", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)
        for _ in range(3):  # warm-up
            requests.post(url + "/api/caption", files={"image": ("x.png", image)}, timeout=120).raise_for_status()
        lat: list[float] = []
        failed: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        def client() -> None:
            with requests.Session() as s:
                while time.monotonic() < stop_at:
                    t0 = time.perf_counter()
                    try:
                        r = s.post(url + "/api/caption", files={"image": ("x.png", image)}, timeout=120)
                        ok = r.status_code == 200 and isinstance(r.json().get("caption"), str)
                        msg = "" if ok else f"HTTP {r.status_code}: {r.text[:200]}"
                    except Exception as exc:  # noqa: BLE001  (counted as a failed request)
                        ok, msg = False, repr(exc)[:200]
                    dt = time.perf_counter() - t0
                    with lock:
                        (lat.append(dt) if ok else failed.append(msg))

        load_before = _uptime()
        t0 = time.perf_counter()
        pool = [threading.Thread(target=client) for _ in range(clients)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = time.perf_counter() - t0
        served = requests.get(url + "/api/info", timeout=10).json()["batching"]["served"]["caption"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    lat.sort()
    return {"max_batch": max_batch, "max_wait_ms": 10, "clients": clients, "seconds": round(wall, 1), "requests_ok": len(lat),
            "failed": len(failed), "failures": failed[:5], "throughput_rps": round(len(lat) / wall, 2),
            "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
            "mean_batch": round(served["requests"] / max(1, served["model_calls"]), 2),
            "server_torch_threads": threads, "load_before": load_before, "load_after": _uptime()}


# -- 2. search -------------------------------------------------------------------------------------
def clustered_vectors(n: int, n_queries: int, dim: int, clusters: int = 1000, spread: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``clusters`` random centres (embeddings of real images cluster by content; uniformly
    random vectors have no near neighbours and are the worst case of every approximate index), and queries that
    are perturbed data points."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.integers(0, n, n_queries)] + spread * rng.standard_normal((n_queries, dim), dtype=np.float32) / np.sqrt(dim)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x.astype(np.float32), q.astype(np.float32)


def search_bench(n: int, dim: int, repeats: int, approx: bool) -> dict:
    from lavislite.serve.index import build_faiss, import_faiss

    faiss = import_faiss()
    faiss.omp_set_num_threads(torch.get_num_threads())  # same threads as torch: a fair race, no OpenMP oversubscription
    x, q = clustered_vectors(n, 16, dim)
    xt = torch.from_numpy(x)
    k = 10
    t0 = time.perf_counter()
    flat = build_faiss(x, "flat")
    build_flat = time.perf_counter() - t0
    out: dict = {"vectors": n, "dim": dim, "k": k, "data": "1,000 clusters, spread 0.6", "threads": torch.get_num_threads(),
                 "load_before": _uptime()}
    for nq in (1, 16):
        qs, qt = q[:nq], torch.from_numpy(q[:nq])
        fns = {"torch": lambda qt=qt: (qt @ xt.t()).topk(k, dim=1), "faiss": lambda qs=qs: flat.search(qs, k)}
        t = C.interleaved(fns, repeats, warmup=2)
        same = bool(np.array_equal(t["torch"]["output"][1].numpy(), t["faiss"]["output"][1]))
        out[f"queries_{nq}"] = {"torch_s": round(t["torch"]["median_s"], 5), "faiss_flat_s": round(t["faiss"]["median_s"], 5),
                                "ratio": round(t["torch"]["median_s"] / t["faiss"]["median_s"], 2), "identical_top10": same}
    out["faiss_flat_build_s"] = round(build_flat, 3)
    if approx:
        exact = flat.search(q, k)[1]
        for kind in ("ivf", "hnsw"):
            t0 = time.perf_counter()
            idx = build_faiss(x, kind)
            built = time.perf_counter() - t0
            t = C.interleaved({"one": lambda idx=idx: idx.search(q[:1], k), "sixteen": lambda idx=idx: idx.search(q, k)}, repeats, warmup=2)
            got = idx.search(q, k)[1]
            recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact)]))
            out[kind] = {"build_s": round(built, 2), "query_1_s": round(t["one"]["median_s"], 5),
                         "queries_16_s": round(t["sixteen"]["median_s"], 5), "recall_at_10": round(recall, 3)}
    out["load_after"] = _uptime()
    return out


# -- 3. end-to-end query ---------------------------------------------------------------------------
def e2e_query(tmp: Path, full: bool, n_vectors: int, repeats: int) -> dict:
    """Text -> image with ITM re-ranking of 16 over an index of ``n_vectors`` synthetic embeddings whose entries
    point at 64 real images (re-ranking re-reads and encodes the candidates, as for a real index)."""
    from lavislite.api import load_model
    from lavislite.serve.identity import LoadedModel, ModelSpec
    from lavislite.serve.index import ImageIndex
    from lavislite.serve.search import Searcher
    from lavislite.serve.sources import Entry

    if full:
        C.synthetic_tokenizer(tmp / "bert_vocab")
        torch.manual_seed(0)
        model = load_model("blip_retrieval", "coco", tokenizer=str(tmp / "bert_vocab"), load_finetuned=False, load_pretrained=False)
        size, label, queries = 384, "full size (ViT-B/16 @ 384, BERT-base; random weights)", C.random_words(8, 1)
    else:
        vocab = tmp / "vocab"
        if not (vocab / "vocab.txt").is_file():
            _tiny_vocab(vocab)
        from lavislite.models.tokenizer import init_tokenizer

        torch.manual_seed(0)
        model = load_model("blip_retrieval", "tiny", tokenizer=str(vocab), image_size=32,
                           vit_overrides={"embed_dim": 64, "depth": 2, "num_heads": 4, "patch_size": 8},
                           med_overrides={"vocab_size": len(init_tokenizer(vocab)), "hidden_size": 64, "num_hidden_layers": 2,
                                          "num_attention_heads": 4, "intermediate_size": 128})
        size, label = 32, "demo size (64-wide, 32 px)"
        queries = ["a red circle on the left", "two blue squares", "a small white cross at the bottom", "a yellow triangle"] * 2
    from lavislite.processors.image_processors import BlipImageEvalProcessor
    from lavislite.processors.text_processors import BlipCaptionProcessor

    model.eval()
    images = _world(tmp / f"world{size}", 64, size)
    dim = int(model.vision_proj.out_features)
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((n_vectors, dim), dtype=np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    entries = [Entry(f"img{i}", str(images[i % len(images)]), (0, 0)) for i in range(n_vectors)]
    meta = {"model": {}, "dim": dim, "kind": "flat", "faiss": None}
    index = ImageIndex(tmp, meta, entries, vec, [], np.zeros((0, dim), np.float32))
    lm = LoadedModel(model, BlipImageEvalProcessor(image_size=size), BlipCaptionProcessor(), ModelSpec("blip_retrieval", "bench"),
                     "", torch.device("cpu"), torch.float32)
    s = Searcher(index, lm)
    index.faiss()
    qi = iter(range(10**9))
    fns = {"itc_only": lambda: s.text_to_image([queries[next(qi) % len(queries)]], k=16, rerank_k=0),
           "itc_itm16": lambda: s.text_to_image([queries[next(qi) % len(queries)]], k=16, rerank_k=16)}
    load_before = _uptime()
    t = C.interleaved(fns, repeats, warmup=1)
    return {"model": label, "vectors": n_vectors, "k": 16, "rerank_k": 16, "itc_only_s": round(t["itc_only"]["median_s"], 4),
            "itc_itm16_s": round(t["itc_itm16"]["median_s"], 4), "times_s": {n: t[n]["times"] for n in t},
            "load_before": load_before, "load_after": _uptime()}


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__, repeats=20)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--server-threads", type=int, default=1, help="torch threads of the server process (default 1: robust on a shared machine)")
    p.add_argument("--vectors", type=int, default=100_000)
    p.add_argument("--full", action="store_true", help="also the end-to-end query with full-size BLIP (slow on a CPU)")
    p.add_argument("--no-approx", action="store_true", help="skip the IVF/HNSW rows")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: load,search,e2e")
    args = p.parse_args(argv)
    C.setup(args)
    if args.quick:
        args.clients, args.seconds, args.vectors = 4, 3.0, 5000
    skip = set(filter(None, args.skip.split(",")))
    result: dict = {"quick": args.quick, "repeats": args.repeats}
    previous = Path(args.out) if args.out else C.RESULTS / "serve.json"
    if skip and previous.is_file():  # parts not re-run keep their earlier numbers (each part records its own load)
        old = json.loads(previous.read_text())
        result.update({part: old[part] for part in ("load", "search", "e2e") if part in skip and part in old})
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "load" not in skip:
            result["load"] = {"no_batching": load_test(tmp, args.clients, args.seconds, 1, args.server_threads),
                              "batching": load_test(tmp, args.clients, args.seconds, 16, args.server_threads)}
            a, b = result["load"]["no_batching"], result["load"]["batching"]
            result["load"]["throughput_ratio"] = round(b["throughput_rps"] / a["throughput_rps"], 2) if a["throughput_rps"] else None
        if "search" not in skip:
            result["search"] = search_bench(args.vectors, 256, args.repeats, not args.no_approx)
            before = json.loads(previous.read_text()).get("search", {}) if previous.is_file() else {}
            for kind in ("ivf", "hnsw") if args.no_approx else ():  # keep the earlier approximate rows, marked
                if kind in before and before.get("vectors") == args.vectors:
                    result["search"][kind] = {**before[kind], "carried_over": True, "load": f"{before['load_before']} → {before['load_after']}"}
        if "e2e" not in skip:
            result["e2e"] = [e2e_query(tmp, False, args.vectors, args.repeats)]
            if args.full:
                result["e2e"].append(e2e_query(tmp, True, args.vectors, max(3, args.repeats // 5)))
    C.write("serve", result, args.out)
    return result


if __name__ == "__main__":
    main()
