"""Benchmark: one full-size training step (forward + backward + AdamW step), random weights.

* ``caption``: ``blip_caption`` base_coco fine-tuning (ViT-B/16 @ 384, LM loss with label smoothing 0.1, the
  prompt and padding masked) against transformers' ``BlipForConditionalGeneration`` carrying the *same*
  weights (bench/caption.py's ``build_pair``; text dropout 0.1 on both sides, as BLIP) and fed the same
  token ids and labels. Before timing, both sides' loss on the batch (eval mode, no dropout) is compared.
* ``pretrain``: ``blip_pretrain`` base (ViT-B 224 px, ITC with momentum encoders and 57,600-entry queues,
  ITM with hard negatives, LM with the tied decoder); transformers has no BLIP pre-training model, so the
  row compares lavislite's bf16 autocast step with its fp32 step.

Each in fp32 and under bf16 autocast; steps interleaved between the sides, median of ``--repeats`` timed
steps after ``--warmup`` untimed ones (bench/_common.py). Offline: a synthetic 30,522-entry WordPiece
vocabulary (plus [DEC]/[ENC] = 30,524, the real size); captions are random words from it.

    python bench/train_step.py [--batch 4] [--repeats 3] [--warmup 1] [--threads N] [--only caption,pretrain]
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

HEADS = ("caption", "pretrain")


def _autocast(amp: str | None, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else contextlib.nullcontext()


def step_fn(loss_fn, params, amp: str | None, device: torch.device):
    """One training step (forward, backward, AdamW) as a zero-argument callable returning the loss."""
    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=1e-5, weight_decay=0.05)

    def step() -> float:
        with _autocast(amp, device):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss {loss}")
        return loss.item()

    return step


def caption_inputs(ours, batch: int, device: torch.device):
    """Images, captions, and the ids/mask/labels lavislite builds from them (given to transformers too)."""
    g = torch.Generator().manual_seed(0)
    size = ours.visual_encoder.patch_embed.img_size[0]
    images = torch.randn(batch, 3, size, size, generator=g).to(device)
    texts = [ours.prompt + c for c in C.random_words(batch, 0)]
    tok = ours.tokenizer
    ids, mask = ours.tokenize(texts, padding="longest", max_length=ours.max_txt_len, first_token=tok.bos_token_id)
    labels = ids.masked_fill(ids == tok.pad_token_id, -100)
    labels[:, : ours.prompt_length] = -100
    return images, texts, ids.to(device), mask.to(device), labels.to(device)


def bench_caption(args, device: torch.device, tmp: Path) -> dict:
    from caption import build_pair

    hf, ours, _, size = build_pair(tmp, args.quick, dropout=0.1)
    hf, ours = hf.to(device).requires_grad_(True), ours.to(device).requires_grad_(True)  # loaded for inference
    images, texts, ids, mask, labels = caption_inputs(ours, args.batch, device)

    def ours_loss():
        return ours({"image": images, "text_input": texts}).loss

    def hf_loss():
        return hf(pixel_values=images, input_ids=ids, attention_mask=mask, labels=labels).loss

    hf.eval(), ours.eval()
    with torch.no_grad():  # same weights, same inputs, no dropout: the losses must agree
        loss_ours, loss_hf = ours_loss().item(), hf_loss().item()
    hf.train(), ours.train()
    rec: dict = {"image_size": size, "peer": "transformers BlipForConditionalGeneration (same weights, same ids/labels)",
                 "params_trainable": sum(p.numel() for p in ours.parameters() if p.requires_grad),
                 "loss_eval": {"lavislite": round(loss_ours, 6), "peer": round(loss_hf, 6),
                               "abs_diff": abs(loss_ours - loss_hf), "agree": abs(loss_ours - loss_hf) < 1e-4}}
    for amp in (None, "bf16"):
        t = C.interleaved({"peer": step_fn(hf_loss, hf.parameters(), amp, device),
                           "lavislite": step_fn(ours_loss, ours.parameters(), amp, device)},
                          args.repeats, args.warmup, device)
        rec[amp or "fp32"] = {"peer_time": C.side(t["peer"]), "lavislite_time": C.side(t["lavislite"]),
                              "ratio": round(t["peer"]["median_s"] / t["lavislite"]["median_s"], 2)}
        print(f"caption {amp or 'fp32'}: transformers {t['peer']['median_s']:.2f} s, lavislite {t['lavislite']['median_s']:.2f} s",
              flush=True)
    return rec


def bench_pretrain(args, device: torch.device, tmp: Path) -> dict:
    from lavislite.common.config import model_type_config
    from lavislite.common.registry import registry

    tok = C.synthetic_tokenizer(tmp / "vocab")
    cls = registry.get_model_class("blip_pretrain")
    over = {"load_finetuned": False, "load_pretrained": False}
    if args.quick:
        over.update(vit_overrides={"embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0}, queue_size=16,
                    med_overrides={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
                    image_size=64)
    cfg = model_type_config(cls, "base", over)
    torch.manual_seed(0)
    model = cls.from_config(cfg.model, tokenizer=tok).to(device).train()
    size = int(cfg.model.image_size)
    g = torch.Generator().manual_seed(0)
    samples = {"image": torch.randn(args.batch, 3, size, size, generator=g).to(device),
               "text_input": C.random_words(args.batch, 0), "image_id": torch.arange(args.batch)}
    # one model, two optimisers: the fp32 and bf16 steps alternate on the same weights
    t = C.interleaved({"fp32": step_fn(lambda: model(samples).loss, model.parameters(), None, device),
                       "bf16": step_fn(lambda: model(samples).loss, model.parameters(), "bf16", device)},
                      args.repeats, args.warmup, device)
    print(f"pretrain: fp32 {t['fp32']['median_s']:.2f} s, bf16 {t['bf16']['median_s']:.2f} s", flush=True)
    return {"image_size": size, "params_trainable": model.num_parameters(trainable_only=True),
            "fp32": C.side(t["fp32"]), "bf16": C.side(t["bf16"]),
            "bf16_speedup": round(t["fp32"]["median_s"] / t["bf16"]["median_s"], 2),
            "last_loss": {"fp32": round(t["fp32"]["output"], 4), "bf16": round(t["bf16"]["output"], 4)}}  # step_fn raises if not finite


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__, repeats=3, batch=4)
    p.add_argument("--only", default=",".join(HEADS))
    args = p.parse_args(argv)
    device = C.setup(args)
    if args.quick:
        args.batch = min(args.batch, 2)
    results: dict = {"batch": args.batch, "repeats": args.repeats, "warmup": args.warmup, "quick": args.quick, "runs": {}}
    runners = {"caption": bench_caption, "pretrain": bench_pretrain}
    for name in [n for n in args.only.split(",") if n]:
        if name not in runners:
            raise SystemExit(f"--only: unknown workload {name!r}; choose from {', '.join(HEADS)}")
        with tempfile.TemporaryDirectory() as tmp:
            results["runs"][name] = runners[name](args, device, Path(tmp))
        C.write("train_step", results, args.out)  # after every workload: a slow machine still leaves partial figures
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
