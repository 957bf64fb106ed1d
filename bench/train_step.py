"""Benchmark: one full-size training step (forward + backward + AdamW step), random weights.

* ``pretrain``: ``blip_pretrain`` base (ViT-B 224 px, ITC with momentum encoders and 57,600-entry queues,
  ITM with hard negatives, LM with the tied decoder), captions padded to 30 tokens;
* ``caption``: ``blip_caption`` base_coco fine-tuning (ViT-B 384 px, LM loss with the prompt masked).

Each in fp32 and under bf16 autocast; the median seconds per step over ``--steps`` timed steps after one
warm-up step. Offline: the tokenizer is a synthetic 30,522-entry WordPiece vocabulary (plus [DEC]/[ENC]
= 30,524, the real size), captions are random words from it. Writes bench/results/train_step.json.

    python bench/train_step.py [--batch 4] [--steps 3] [--device cpu|cuda] [--threads N] [--only pretrain,caption]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lavislite.common.config import model_type_config
from lavislite.common.registry import registry
from lavislite.models.tokenizer import init_tokenizer

HEADS = {  # name -> (arch, model_type, image size)
    "pretrain": ("blip_pretrain", "base", 224),
    "caption": ("blip_caption", "base_coco", 384),
}


def synthetic_tokenizer(folder: Path):
    """A BERT-sized vocabulary (30,522 entries, special tokens at BERT's ids) written to ``folder``."""
    words = [f"w{i}" for i in range(30522 - 110)]
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"[unused{i}]" for i in range(99, 105)] + words
    assert len(vocab) == 30522 and vocab.index("[CLS]") == 101 and vocab.index("[SEP]") == 102
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return init_tokenizer(folder)


def captions(batch: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(30000)}" for _ in range(rng.randint(8, 14))) for _ in range(batch)]


def build(arch: str, model_type: str, tok, device: torch.device):
    cls = registry.get_model_class(arch)
    over = {"load_finetuned": False, "load_pretrained": False}
    cfg = model_type_config(cls, model_type, over)
    torch.manual_seed(0)
    model = cls.from_config(cfg.model, tokenizer=tok).to(device)
    model.train()
    return model


def time_steps(model, samples: dict, steps: int, amp: str | None, device: torch.device) -> list[float]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.05)
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp == "bf16" else contextlib.nullcontext
    times = []
    for i in range(steps + 1):  # the first step warms up (allocations, AdamW state)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with ctx():
            out = model(samples)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
        if not torch.isfinite(out.loss):
            raise RuntimeError(f"non-finite loss {out.loss}")
    return times


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", default="pretrain,caption")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "train_step.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "timed_steps": args.steps,
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tok = synthetic_tokenizer(Path(tmp) / "vocab")
        for name in [n for n in args.only.split(",") if n]:
            arch, model_type, size = HEADS[name]
            model = build(arch, model_type, tok, device)
            g = torch.Generator().manual_seed(0)
            samples = {
                "image": torch.randn(args.batch, 3, size, size, generator=g).to(device),
                "text_input": captions(args.batch, 0),
                "image_id": torch.arange(args.batch),
            }
            if name == "caption":
                samples["text_input"] = ["a picture of " + c for c in samples["text_input"]]
            for amp in (None, "bf16"):
                times = time_steps(model, samples, args.steps, amp, device)
                key = f"{name}_{amp or 'fp32'}"
                results["runs"][key] = {
                    "arch": arch, "model_type": model_type, "image_size": size,
                    "params_total": model.num_parameters(), "params_trainable": model.num_parameters(trainable_only=True),
                    "median_s_per_step": statistics.median(times), "step_times_s": [round(t, 4) for t in times],
                }
                print(f"{key:>16}: {statistics.median(times):.3f} s/step  ({', '.join(f'{t:.3f}' for t in times)})", flush=True)
                _write(args.out, results)  # after every run: a slow machine still leaves partial figures
            del model
    print(f"wrote {args.out}")
    return results


def _write(path: str, results: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
