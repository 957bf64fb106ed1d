"""Benchmark: BLIP VQA inference at full size (ViT-B, 480 px, 12+12-layer MED), random weights.

* rank: 3,128 synthetic candidate answers, k=128, lavislite ``predict_answers`` (one batched decoder call,
  candidates grouped per question, no repeated question states, answer list tokenized once) vs a
  straightforward per-question implementation of the original ``rank_answer`` written here (question
  states repeated k times, candidates padded to the longest answer of the whole list);
* generate: beam 3, max_len 10, lavislite (cross-attention K/V once per question) vs the original's
  recipe (question states repeated per beam, cross-attention K/V recomputed at every step).

Both sides share the image tokens (the ViT cost is identical and reported separately). Offline: the
vocabulary is a WordPiece vocab trained on generated words; the text model's vocab_size is set to it.
Writes bench/results/vqa.json.

    python bench/vqa.py [--batch 8] [--image-size 480] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lavislite.models.blip.vqa import BlipVQA
from lavislite.models.med import MedKVCache
from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer

N_ANSWERS = 3128


def synth_text(seed: int, n_words: int = 2500):
    """Generated words, 3,128 unique short answers (1-3 words) and a training corpus for the vocab."""
    rng = random.Random(seed)
    words = sorted({"".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 8))) for _ in range(n_words)})
    answers: list[str] = []
    seen = set()
    while len(answers) < N_ANSWERS:
        a = " ".join(rng.choices(words, k=rng.choice([1, 1, 1, 2, 2, 3])))
        if a not in seen:
            seen.add(a)
            answers.append(a)
    corpus = [" ".join(rng.choices(words, k=12)) for _ in range(4000)] + answers
    return words, answers, corpus


def reference_rank(model: BlipVQA, states, q_mask, answer_list, k):
    """The original rank_answer, one question at a time: tokenize the list, [DEC] step, top-k, repeat the
    question states k times, score = -loss over the padded candidates."""
    tok = model.tokenizer
    a = tok(answer_list, padding="longest", return_tensors="pt")
    ids, atts = a.input_ids, a.attention_mask
    ids[:, 0] = tok.bos_token_id
    out = []
    for b in range(states.shape[0]):
        st, m = states[b : b + 1], q_mask[b : b + 1]
        logits = model.text_decoder(ids[:1, :1], encoder_hidden_states=st, encoder_attention_mask=m).logits[:, 0]
        _, topk = F.softmax(logits, dim=1).index_select(1, ids[:, 1]).topk(k, dim=1)
        cand, catt = ids[topk[0]], atts[topk[0]]
        labels = cand.masked_fill(cand == tok.pad_token_id, -100)
        loss = model.text_decoder(cand, catt, encoder_hidden_states=st.repeat(k, 1, 1),
                                  encoder_attention_mask=m.repeat(k, 1), labels=labels, reduction="none").loss
        out.append(answer_list[int(topk[0, (-loss).argmax()])])
    return out


def reference_generate_ids(model: BlipVQA, states, num_beams=3, max_len=10, min_len=1):
    """The original's generate: question states repeat_interleave(num_beams); only self-attention K/V
    cached, so cross-attention K/V are recomputed on the repeated states at every step."""
    from lavislite.models.generation import generate

    tok = model.tokenizer
    repeated = states.repeat_interleave(num_beams, dim=0)
    bos = torch.full((states.shape[0], 1), tok.bos_token_id, dtype=torch.long)

    def step(input_ids, past):
        if past is None:  # the prompt runs once per question, then generate() expands it to the beams
            out = model.text_decoder(input_ids, encoder_hidden_states=states, use_cache=True, logits_last_only=True)
        else:
            out = model.text_decoder(input_ids, encoder_hidden_states=repeated, past_key_values=MedKVCache(past.self_kv),
                                     use_cache=True, logits_last_only=True)
        return out.logits[:, -1], out.past_key_values

    return generate(step, model.text_decoder.reorder_cache, bos, eos_token_id=tok.sep_token_id,
                    pad_token_id=tok.pad_token_id, num_beams=num_beams, max_length=max_len, min_length=min_len)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return f"cpu: {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores visible)"
    return "cpu"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8, help="questions (= images) per batch")
    p.add_argument("--image-size", type=int, default=480)
    p.add_argument("--k", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "vqa.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    words, answers, corpus = synth_text(0)
    vocab_dir = Path(tempfile.mkdtemp(prefix="bench_vqa_vocab_"))
    build_wordpiece_vocab(corpus, 4000, vocab_dir)
    tok = init_tokenizer(vocab_dir)
    model = BlipVQA.from_pretrained(
        "vqav2", load_finetuned=False, load_pretrained=False, tokenizer=str(vocab_dir),
        image_size=args.image_size, med_overrides={"vocab_size": len(tok)},
    ).eval()

    rng = random.Random(1)
    questions = [" ".join(rng.choices(words, k=rng.randint(5, 12))) for _ in range(args.batch)]
    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    with torch.inference_mode():
        # warm-up (small), then the timed runs
        model.predict_answers({"image_embeds": model.visual_encoder(images[:1]), "text_input": questions[:1]},
                              answer_list=answers[:64], num_ans_candidates=8)
        image_embeds, t_vit = timed(lambda: model.visual_encoder(images))
        samples = {"image_embeds": image_embeds, "text_input": questions}

        # first lavislite call includes tokenizing the 3,128 answers; the second uses the cached tokens
        ours_first, t_ours_first = timed(lambda: model.predict_answers(samples, answer_list=answers, num_ans_candidates=args.k))
        ours, t_ours = timed(lambda: model.predict_answers(samples, answer_list=answers, num_ans_candidates=args.k))
        states, q_mask = model.encode_question(samples)
        ref, t_ref = timed(lambda: reference_rank(model, states, q_mask, answers, args.k))
        _, t_enc = timed(lambda: model.encode_question(samples))

        gen_ids, t_gen = timed(lambda: model.generate_answer_ids(states, num_beams=3, max_len=10, min_len=1))
        ref_gen_ids, t_ref_gen = timed(lambda: reference_generate_ids(model, states))

    t_ref_total = t_ref + t_enc  # the reference above took precomputed question states
    b = args.batch
    result = {
        "device": "cpu",
        "cpu": _cpu_model(),
        "threads": torch.get_num_threads(),
        # other processes on the machine skew absolute times; both sides ran in turn in the same process
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "model": f"blip_vqa vqav2 architecture, ViT-B/16 @ {args.image_size}px, random weights, text vocab {len(tok)}",
        "parameters": model.num_parameters(),
        "batch_questions": b,
        "answer_list_size": len(answers),
        "answer_list_padded_tokens": int(tok(answers, padding="longest", return_tensors="pt").input_ids.shape[1]),
        "k": args.k,
        "vit_seconds": round(t_vit, 3),
        "vit_images_per_s": round(b / t_vit, 3),
        "rank": {
            "lavislite_seconds_first_call": round(t_ours_first, 3),
            "lavislite_seconds": round(t_ours, 3),
            "reference_seconds": round(t_ref_total, 3),
            "lavislite_questions_per_s": round(b / t_ours, 3),
            "reference_questions_per_s": round(b / t_ref_total, 3),
            "speedup": round(t_ref_total / t_ours, 2),
            "end_to_end_questions_per_s_lavislite": round(b / (t_vit + t_ours), 3),
            "end_to_end_questions_per_s_reference": round(b / (t_vit + t_ref_total), 3),
            "identical_answers": ours == ref and ours_first == ref,
        },
        "generate_beam3": {
            "lavislite_seconds": round(t_gen, 3),
            "reference_seconds": round(t_ref_gen, 3),
            "lavislite_questions_per_s": round(b / t_gen, 3),
            "reference_questions_per_s": round(b / t_ref_gen, 3),
            "speedup": round(t_ref_gen / t_gen, 2),
            "identical_ids": torch.equal(gen_ids, ref_gen_ids),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
