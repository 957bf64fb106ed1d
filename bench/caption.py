"""Benchmark: BLIP captioning, lavislite vs transformers ``BlipForConditionalGeneration`` on the same weights.

A full-size BLIP captioner (ViT-B/16 @ 384, 12-layer MED decoder, vocab 30,524) with transformers' random
initialisation is saved with ``save_pretrained`` and loaded into lavislite (``load_model(...,
checkpoint=dir)``), so both sides carry identical weights. Both run under ``torch.inference_mode``, in one
process, interleaved (bench/_common.py). Workloads (batch ``--batch``, prompt "a picture of "):

* ``beam3``: beam 3, max_length 20, min_length 5 (lengths count the prompt, as BLIP), image -> ids;
* ``greedy``: same lengths, image -> ids;
* ``beam3_decode`` / ``greedy_decode``: the text decoder only, image tokens precomputed (isolates the
  decoding levers: cross-attention K/V once per image shared by the beams, KV cache, last-position logits);
* ``beam3_415`` (untimed): lavislite's beam-3 ids vs a literal transformers-4.15 beam search
  (tests/helpers/generation.py) driven by transformers' logits -- the same-rules check;
* ``bf16``: lavislite bf16 (``load_model(..., dtype="bf16")``) vs lavislite fp32, beam 3, image -> ids,
  with the fraction of identical captions (random weights: see RESULTS.md for what that means).

Tokens: greedy must be identical. transformers 5.x beam search ranks finished hypotheses with a different
length normalisation than 4.15 (which lavislite reproduces, tests/generation); rows are reported as
identical, or as differing with different lengths (the rules' expected disagreement), or differing with
equal lengths (a real mismatch).

    python bench/caption.py [--batch 8] [--repeats 3] [--quick] [--only beam3,greedy,beam3_decode,greedy_decode,bf16]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

WORKLOADS = ("beam3", "greedy", "beam3_decode", "greedy_decode", "beam3_415", "bf16")


def build_pair(tmp: Path, quick: bool, dropout: float = 0.1):
    """(hf model, lavislite model, tokenizer, image size): same weights, eval mode.

    ``dropout``: the text decoder's hidden and attention dropout on both sides (BLIP's 0.1; transformers'
    BlipTextConfig defaults to 0.0); only training (bench/train_step.py) sees it."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    from lavislite.api import load_model

    tok = C.synthetic_tokenizer(tmp / "vocab")
    # Every architecture field spelled out: BlipTextConfig's defaults differ from BLIP's med_config.json
    # (num_attention_heads 8 vs 12) and BlipVisionConfig's LayerNorm eps is 1e-5 (BLIP's ViT: 1e-6).
    text = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, sep_token_id=tok.sep_token_id,
                eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id, label_smoothing=0.1,
                hidden_size=768, encoder_hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, hidden_act="gelu", layer_norm_eps=1e-12, max_position_embeddings=512,
                hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    vision = dict(image_size=384, patch_size=16, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, hidden_act="gelu", layer_norm_eps=1e-6)
    if quick:
        text.update(hidden_size=64, encoder_hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
        vision.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=64)
    torch.manual_seed(0)
    hf = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision)).eval()
    initialise(hf)
    hf.save_pretrained(tmp / "hf")
    over = {"tokenizer": str(tmp / "vocab"), "image_size": vision["image_size"],
            "med_overrides": {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}}
    if quick:
        over["vit_overrides"] = {"embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0}
        over["med_overrides"].update(hidden_size=64, encoder_width=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    ours = load_model("blip_caption", "base_coco", checkpoint=str(tmp / "hf"), **over)
    check_configs(hf, ours, full_size=not quick)
    return hf, ours, tok, vision["image_size"]


def check_configs(hf, ours, full_size: bool) -> dict:
    """Assert the transformers and lavislite models have the same architecture (and, at full size, that it
    is BLIP's: ``MedConfig.preset("med_base")`` and ViT-B/16); returns the compared fields."""
    import dataclasses

    from lavislite.models.med import MedConfig
    from lavislite.models.vit import VIT_SIZES

    t, v = hf.config.text_config, hf.config.vision_config
    med = ours.text_decoder.config
    vit = ours.visual_encoder
    blk = vit.blocks[0]
    gelu = {"gelu": ("GELU", "none")}  # HF "gelu" is the exact erf GELU, as nn.GELU()

    def act(m):
        return (type(m).__name__, getattr(m, "approximate", "none"))

    pairs = {
        "text.vocab_size": (t.vocab_size, med.vocab_size),
        "text.hidden_size": (t.hidden_size, med.hidden_size),
        "text.encoder_hidden_size": (t.encoder_hidden_size, med.encoder_width),
        "text.intermediate_size": (t.intermediate_size, med.intermediate_size),
        "text.num_hidden_layers": (t.num_hidden_layers, med.num_hidden_layers),
        "text.num_attention_heads": (t.num_attention_heads, med.num_attention_heads),
        "text.hidden_act": (t.hidden_act, med.hidden_act),
        "text.layer_norm_eps": (t.layer_norm_eps, med.layer_norm_eps),
        "text.max_position_embeddings": (t.max_position_embeddings, med.max_position_embeddings),
        "vision.image_size": (v.image_size, vit.patch_embed.img_size[0]),
        "vision.patch_size": (v.patch_size, vit.patch_embed.patch_size[0]),
        "vision.hidden_size": (v.hidden_size, vit.embed_dim),
        "vision.intermediate_size": (v.intermediate_size, blk.mlp.fc1.out_features),
        "vision.num_hidden_layers": (v.num_hidden_layers, len(vit.blocks)),
        "vision.num_attention_heads": (v.num_attention_heads, blk.attn.num_heads),
        "vision.hidden_act": (gelu.get(v.hidden_act, v.hidden_act), act(blk.mlp.act)),
        "vision.layer_norm_eps": (v.layer_norm_eps, blk.norm1.eps),
        "vision.final_layer_norm_eps": (v.layer_norm_eps, vit.norm.eps),
    }
    bad = {k: ab for k, ab in pairs.items() if ab[0] != ab[1]}
    assert not bad, f"transformers vs lavislite architecture differs (field: (transformers, lavislite)): {bad}"
    if full_size:
        base = dataclasses.asdict(MedConfig.preset("med_base"))
        diff = {k: (getattr(med, k), base[k]) for k in base if getattr(med, k) != base[k] and "dropout" not in k}
        assert not diff, f"lavislite caption decoder is not med_base (field: (model, preset)): {diff}"
        vb = VIT_SIZES["base"]
        got = dict(patch_size=vit.patch_embed.patch_size[0], embed_dim=vit.embed_dim, depth=len(vit.blocks), num_heads=blk.attn.num_heads)
        assert all(got[k] == vb[k] for k in got), f"lavislite ViT is not ViT-B/16: {got} vs {vb}"
        assert blk.mlp.fc1.out_features == 4 * vit.embed_dim and blk.norm1.eps == 1e-6, "ViT-B: mlp_ratio 4, LayerNorm eps 1e-6"
    return {k: a for k, (a, _) in pairs.items()}


def initialise(model: torch.nn.Module, seed: int = 0) -> None:
    """Explicit BERT-style random weights (normal std 0.02, LayerNorm 1/0, biases 0). transformers' own
    init left some full-size tensors badly scaled (image tokens ~1e-5), which makes both sides' logits
    ill-conditioned and token comparisons meaningless."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def compare_rows(ours: torch.Tensor, ref: torch.Tensor, pad: int, eos: int) -> dict:
    """Identical rows; differing rows split by whether the two hypotheses have different lengths."""

    def rows(t):
        out = []
        for r in t.tolist():
            while r and r[-1] == pad:
                r.pop()
            out.append(r[: r.index(eos) + 1] if eos in r else r)  # HF pads finished beams with eos
        return out

    a, b = rows(ours), rows(ref)
    same = sum(x == y for x, y in zip(a, b))
    diff_len = sum(x != y and len(x) != len(y) for x, y in zip(a, b))
    return {"rows": len(a), "identical": same, "differ_other_length": diff_len, "differ_same_length": len(a) - same - diff_len,
            "identical_fraction": round(same / len(a), 4)}


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__, repeats=3, batch=8)
    p.add_argument("--only", default=",".join(WORKLOADS))
    args = p.parse_args(argv)
    device = C.setup(args)
    if args.quick:
        args.batch = min(args.batch, 2)
    only = [w for w in args.only.split(",") if w]
    from lavislite.models.generation import generate

    results: dict = {"batch": args.batch, "repeats": args.repeats, "quick": args.quick, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        hf, ours, tok, size = build_pair(Path(tmp), args.quick)
        hf, ours = hf.to(device), ours.to(device)
        results["architecture_agrees"] = check_configs(hf, ours, full_size=not args.quick)
        results["model"] = f"blip_caption base_coco architecture, ViT-B/16 @ {size}px, random weights (std 0.02), fp32"
        images = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
        hf_prompt = tok([ours.prompt] * args.batch, return_tensors="pt").to(device)
        pad, eos = tok.pad_token_id, tok.sep_token_id
        embeds = ours.visual_encoder(images)
        # HF's decoder input: [DEC] + prompt without [SEP], as its generate() builds it
        dec_ids = hf_prompt.input_ids[:, :-1].clone()
        dec_ids[:, 0] = tok.bos_token_id
        ones = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)

        def gen_kw(beams):
            return dict(num_beams=beams, do_sample=False, max_length=20, min_length=5)

        def hf_full(beams):
            return lambda: hf.generate(pixel_values=images, input_ids=hf_prompt.input_ids.clone(),
                                       attention_mask=hf_prompt.attention_mask, **gen_kw(beams))

        def ours_full(beams, model=ours):
            return lambda: model.generate_ids({"image": images}, num_beams=beams, max_length=20, min_length=5)

        def hf_dec(beams):
            return lambda: hf.text_decoder.generate(input_ids=dec_ids, attention_mask=hf_prompt.attention_mask[:, :-1],
                                                    eos_token_id=eos, pad_token_id=pad, encoder_hidden_states=embeds,
                                                    encoder_attention_mask=ones, **gen_kw(beams))

        def ours_dec(beams):
            def run():
                step, reorder = ours._decoder_fns(embeds)
                return generate(step, reorder, ours.prompt_ids(args.batch), eos_token_id=eos, pad_token_id=pad,
                                num_beams=beams, max_length=20, min_length=5)
            return run

        plans = {
            "beam3": (hf_full(3), ours_full(3), "transformers BlipForConditionalGeneration.generate"),
            "greedy": (hf_full(1), ours_full(1), "transformers BlipForConditionalGeneration.generate"),
            "beam3_decode": (hf_dec(3), ours_dec(3), "transformers text_decoder.generate (image tokens given)"),
            "greedy_decode": (hf_dec(1), ours_dec(1), "transformers text_decoder.generate (image tokens given)"),
        }
        for name in [w for w in only if w in plans]:
            peer_fn, ours_fn, peer_name = plans[name]
            t = C.interleaved({"peer": peer_fn, "lavislite": ours_fn}, args.repeats, args.warmup, device)
            rec = {
                "peer": peer_name, "peer_time": C.side(t["peer"], args.batch), "lavislite_time": C.side(t["lavislite"], args.batch),
                "ratio": round(t["peer"]["median_s"] / t["lavislite"]["median_s"], 2),
                "tokens": compare_rows(t["lavislite"]["output"], t["peer"]["output"], pad, eos),
                "memory_how": C.memory_how(device),
            }
            results["runs"][name] = rec
            print(name, rec, flush=True)
            C.write("caption", results, args.out)  # keep what finished if a later workload is interrupted
        if "beam3_415" in only:
            results["runs"]["beam3_415"] = beam_vs_415(hf, ours, images, dec_ids, hf_prompt.attention_mask[:, :-1], pad, eos,
                                                       results["runs"].get("beam3"), ours_full(3))
            C.write("caption", results, args.out)
        if "bf16" in only:
            ours16 = ours_copy_bf16(ours)
            fp32_fn, bf16_fn = ours_full(3), ours_full(3, ours16)
            t = C.interleaved({"fp32": fp32_fn, "bf16": bf16_fn}, args.repeats, args.warmup, device)
            a, b = t["fp32"]["output"], t["bf16"]["output"]
            caps32, caps16 = ours.decode(a), ours.decode(b)
            rec = {
                "peer": "lavislite fp32 (same model)", "peer_time": C.side(t["fp32"], args.batch),
                "lavislite_time": C.side(t["bf16"], args.batch),
                "ratio": round(t["fp32"]["median_s"] / t["bf16"]["median_s"], 2),
                "tokens": compare_rows(b, a, pad, eos),
                "identical_captions_fraction": round(sum(x == y for x, y in zip(caps32, caps16)) / len(caps32), 4),
                "trained_model": False,
                "note": "agreement measured on random weights (the demo's trained caption model was not available)",
                "memory_how": C.memory_how(device),
            }
            results["runs"]["bf16"] = rec
            print("bf16", rec, flush=True)
    C.write("caption", results, args.out)
    return results


def beam_vs_415(hf, ours, images, dec_ids, dec_mask, pad: int, eos: int, beam_rec: dict | None, ours_fn) -> dict:
    """lavislite's beam-3 ids vs a literal transformers-4.15 beam search (tests/helpers/generation.py)
    driven by transformers' own logits (its vision model + text decoder, full recompute per step; untimed)."""
    sys.path.insert(0, str(C.HERE.parent))  # the repository root: tests.helpers
    from tests.helpers.generation import reference_beam_search_415

    beams = 3
    embeds = hf.vision_model(pixel_values=images)[0].repeat_interleave(beams, 0)
    enc_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)

    def logits_fn(ids):
        mask = torch.ones_like(ids)
        mask[:, : dec_mask.shape[1]] = dec_mask.repeat_interleave(beams, 0)
        out = hf.text_decoder(input_ids=ids.to(embeds.device), attention_mask=mask.to(embeds.device),
                              encoder_hidden_states=embeds, encoder_attention_mask=enc_mask)
        return out.logits[:, -1].cpu()

    ref, seconds = C.timed_once(lambda: reference_beam_search_415(
        logits_fn, dec_ids.cpu(), num_beams=beams, max_length=20, min_length=5, eos_token_id=eos, pad_token_id=pad))
    ours_ids = ours_fn().cpu()
    return {"peer": "literal transformers-4.15 beam search (tests/generation) on transformers' logits, untimed reference",
            "reference_s": round(seconds, 2), "tokens": compare_rows(ours_ids, ref, pad, eos)}


def ours_copy_bf16(model):
    """A bf16 copy of ``model`` (what ``load_model(..., dtype="bf16")`` places)."""
    import copy

    from lavislite.api import _place

    return _place(copy.deepcopy(model), True, model.device, "bf16")


if __name__ == "__main__":
    main(sys.argv[1:])
