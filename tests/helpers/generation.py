"""Shared pieces of the generation tests: tiny decoders wrapped as step_fn/reorder_fn, and a literal,
loop-per-item transcription of HF transformers 4.15 greedy/beam search used as an oracle."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# tiny GPT-2 (transformers 5.23) with a controllable eos logit


def tiny_gpt2(seed: int, vocab: int = 64, eos_token_id: int = 1, eos_logit: float | None = None):
    """A seeded 2-layer GPT-2. With ``eos_logit`` set, the eos logit is the constant ``eos_logit``
    (one hidden unit is pinned to 1 by the final LayerNorm and only eos reads it), so tests can make
    eos impossible (-100) or frequent; other logits are unaffected."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2, tie_word_embeddings=False,
        bos_token_id=eos_token_id, eos_token_id=eos_token_id,
    )
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        # random init is too flat to be interesting (std 0.02): sharpen the output distribution
        model.lm_head.weight.mul_(40.0)
        if eos_logit is not None:
            model.transformer.ln_f.weight[0] = 0.0
            model.transformer.ln_f.bias[0] = 1.0
            model.lm_head.weight[:, 0] = 0.0
            model.lm_head.weight[eos_token_id] = 0.0
            model.lm_head.weight[eos_token_id, 0] = eos_logit
    return model


def gpt2_fns(model, cached: bool = True):
    """step_fn/reorder_fn for a HF causal LM: with a DynamicCache, or (cached=False) recomputing the
    whole sequence every step with the 'past' being the ids so far."""
    if cached:
        def step_fn(ids, past):
            out = model(input_ids=ids, past_key_values=past, use_cache=True)
            return out.logits[:, -1], out.past_key_values

        def reorder_fn(past, index):
            past.reorder_cache(index)  # transformers' Cache: index_select on every layer, in place
            return past
    else:
        def step_fn(ids, past):
            ids = ids if past is None else torch.cat([past, ids], dim=1)
            return model(input_ids=ids, use_cache=False).logits[:, -1], ids

        def reorder_fn(past, index):
            return past[index]
    return step_fn, reorder_fn


# ---------------------------------------------------------------------------------------------
# a cheap prefix-dependent table "LM" (no transformers)


class TableLM:
    """logits(seq) = A[last] + B[second last] + C[len]: deterministic, prefix-dependent, cheap."""

    def __init__(self, seed: int, vocab: int = 12, eos_token_id: int = 1, eos_bias: float = 0.0, scale: float = 3.0):
        g = torch.Generator().manual_seed(seed)
        self.a = torch.randn(vocab, vocab, generator=g) * scale
        self.b = torch.randn(vocab, vocab, generator=g) * scale / 2
        self.c = torch.randn(64, vocab, generator=g)
        self.c[:, eos_token_id] += eos_bias

    def logits(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.a[seqs[:, -1]] + self.b[seqs[:, -2] if seqs.shape[1] > 1 else seqs[:, -1]] + self.c[seqs.shape[1]]

    def fns(self):
        def step_fn(ids, past):
            seqs = ids if past is None else torch.cat([past, ids], dim=1)
            return self.logits(seqs), seqs

        def reorder_fn(past, index):
            return past[index]
        return step_fn, reorder_fn


# ---------------------------------------------------------------------------------------------
# literal HF 4.15 transcription (per-item Python loops; the oracle, not the product)


class _BeamHypotheses415:
    def __init__(self, num_beams, length_penalty, early_stopping):
        self.length_penalty, self.early_stopping, self.num_beams = length_penalty, early_stopping, num_beams
        self.beams, self.worst_score = [], 1e9

    def __len__(self):
        return len(self.beams)

    def add(self, hyp, sum_logprobs):
        score = sum_logprobs / (hyp.shape[-1] ** self.length_penalty)
        if len(self) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp))
            if len(self) > self.num_beams:
                sorted_next_scores = sorted([(s, idx) for idx, (s, _) in enumerate(self.beams)])
                del self.beams[sorted_next_scores[0][1]]
                self.worst_score = sorted_next_scores[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs, cur_len):
        if len(self) < self.num_beams:
            return False
        elif self.early_stopping:
            return True
        cur_score = best_sum_logprobs / cur_len ** self.length_penalty
        return self.worst_score >= cur_score


def _processors_415(input_ids, scores, repetition_penalty, min_length, eos_token_id):
    if repetition_penalty != 1.0:
        score = torch.gather(scores, 1, input_ids)
        score = torch.where(score < 0, score * repetition_penalty, score / repetition_penalty)
        scores.scatter_(1, input_ids, score)
    if input_ids.shape[-1] < min_length:
        scores[:, eos_token_id] = -float("inf")
    return scores


def reference_beam_search_415(
    logits_fn: Callable[[torch.Tensor], torch.Tensor], input_ids, *, num_beams, max_length, min_length,
    eos_token_id, pad_token_id, repetition_penalty=1.0, length_penalty=1.0, early_stopping=False,
    num_return_sequences=1,
):
    """transformers 4.15 generate(num_beams>1): expand, beam_search, BeamSearchScorer.finalize."""
    batch_size = input_ids.shape[0]
    input_ids = input_ids.repeat_interleave(num_beams, dim=0)
    hyps = [_BeamHypotheses415(num_beams, length_penalty, early_stopping) for _ in range(batch_size)]
    done = [False] * batch_size
    beam_scores = torch.zeros((batch_size, num_beams))
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view((batch_size * num_beams,))
    cur_len = input_ids.shape[-1]
    while True:
        next_token_logits = logits_fn(input_ids).float()
        next_token_scores = F.log_softmax(next_token_logits, dim=-1)
        next_token_scores = _processors_415(input_ids, next_token_scores, repetition_penalty, min_length, eos_token_id)
        next_token_scores = next_token_scores + beam_scores[:, None].expand_as(next_token_scores)
        vocab_size = next_token_scores.shape[-1]
        next_token_scores = next_token_scores.view(batch_size, num_beams * vocab_size)
        next_token_scores, next_tokens = torch.topk(next_token_scores, 2 * num_beams, dim=1, largest=True, sorted=True)
        next_indices = next_tokens // vocab_size
        next_tokens = next_tokens % vocab_size
        # --- BeamSearchScorer.process
        pcur_len = input_ids.shape[-1]
        next_beam_scores = torch.zeros((batch_size, num_beams), dtype=next_token_scores.dtype)
        next_beam_tokens = torch.zeros((batch_size, num_beams), dtype=next_tokens.dtype)
        next_beam_indices = torch.zeros((batch_size, num_beams), dtype=next_indices.dtype)
        for batch_idx, beam_hyp in enumerate(hyps):
            if done[batch_idx]:
                next_beam_scores[batch_idx, :] = 0
                next_beam_tokens[batch_idx, :] = pad_token_id
                next_beam_indices[batch_idx, :] = 0
                continue
            beam_idx = 0
            for beam_token_rank, (next_token, next_score, next_index) in enumerate(
                zip(next_tokens[batch_idx], next_token_scores[batch_idx], next_indices[batch_idx])
            ):
                batch_beam_idx = batch_idx * num_beams + next_index
                if next_token.item() == eos_token_id:
                    if beam_token_rank >= num_beams:
                        continue
                    beam_hyp.add(input_ids[batch_beam_idx].clone(), next_score.item())
                else:
                    next_beam_scores[batch_idx, beam_idx] = next_score
                    next_beam_tokens[batch_idx, beam_idx] = next_token
                    next_beam_indices[batch_idx, beam_idx] = batch_beam_idx
                    beam_idx += 1
                if beam_idx == num_beams:
                    break
            done[batch_idx] = done[batch_idx] or beam_hyp.is_done(next_token_scores[batch_idx].max().item(), pcur_len)
        beam_scores = next_beam_scores.view(-1)
        beam_idx = next_beam_indices.view(-1)
        input_ids = torch.cat([input_ids[beam_idx, :], next_beam_tokens.view(-1).unsqueeze(-1)], dim=-1)
        cur_len = cur_len + 1
        if all(done) or cur_len >= max_length:
            break
    # --- BeamSearchScorer.finalize
    for batch_idx, beam_hyp in enumerate(hyps):
        if done[batch_idx]:
            continue
        for beam_id in range(num_beams):
            batch_beam_idx = batch_idx * num_beams + beam_id
            beam_hyp.add(input_ids[batch_beam_idx], beam_scores[batch_beam_idx].item())
    sent_lengths, best = [], []
    for beam_hyp in hyps:
        sorted_hyps = sorted(beam_hyp.beams, key=lambda x: x[0])
        for _ in range(num_return_sequences):
            best_hyp = sorted_hyps.pop()[1]
            sent_lengths.append(len(best_hyp))
            best.append(best_hyp)
    sent_max_len = min(max(sent_lengths) + 1, max_length)
    decoded = torch.full((len(best), sent_max_len), pad_token_id, dtype=torch.long)
    for i, hypo in enumerate(best):
        decoded[i, : sent_lengths[i]] = hypo
        if sent_lengths[i] < max_length:
            decoded[i, sent_lengths[i]] = eos_token_id
    return decoded


def reference_greedy_415(logits_fn, input_ids, *, max_length, min_length, eos_token_id, pad_token_id,
                         repetition_penalty=1.0):
    """transformers 4.15 greedy_search (processors on raw logits)."""
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.long)
    while True:
        scores = _processors_415(input_ids, logits_fn(input_ids).float(), repetition_penalty, min_length, eos_token_id)
        next_tokens = torch.argmax(scores, dim=-1)
        next_tokens = next_tokens * unfinished + pad_token_id * (1 - unfinished)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        unfinished = unfinished.mul((next_tokens != eos_token_id).long())
        if unfinished.max() == 0 or input_ids.shape[-1] >= max_length:
            return input_ids
