"""Text generation (greedy, sampling, beam search) that lavislite owns.

BLIP's numbers were produced by HF transformers 4.15 ``generate``; newer transformers changed beam
search (length normalisation, stopping rule, fill value), so this module reproduces the 4.15 semantics
itself. It is model-agnostic: a decoder plugs in through two callables,

* ``step_fn(input_ids, past) -> (logits, past)``: ``input_ids`` is the whole prompt (N, L0) on the first
  call and only the newest token (N, 1) afterwards; ``logits`` are the last position's (N, V).
* ``reorder_fn(past, index) -> past``: keep/reorder cache rows, ``len(index)`` = new number of rows.

The prompt runs once per input row; the cache is then expanded with
``index = arange(B).repeat_interleave(n)`` (n = num_beams, or num_return_sequences when sampling).
Every later index keeps the rows of batch item b inside ``[b*n, (b+1)*n)`` so a decoder may share one
image's cross-attention keys/values across its group of rows.

Semantics (all lengths count the prompt):

* processors, in 4.15 order: repetition penalty (scores of tokens already in the row: positive / p,
  negative * p), then min-length (eos -> -inf while ``cur_len < min_length``). Greedy/sampling apply
  them to raw logits; beam search applies them to ``log_softmax`` scores.
* sampling then applies temperature, top-k, top-p (4.15 warpers), softmax and ``torch.multinomial``.
* greedy/sampling: finished rows get ``pad_token_id``; stop when every row has emitted eos or the
  length reaches ``max_length``.
* beam search: HF 4.15 ``BeamSearchScorer`` (see :func:`_beam_search`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from lavislite.common.errors import ConfigError

StepFn = Callable[[torch.Tensor, Any], "tuple[torch.Tensor, Any]"]
ReorderFn = Callable[[Any, torch.Tensor], Any]


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings; field names and defaults follow HF ``generate`` (4.15)."""

    eos_token_id: int
    pad_token_id: int
    num_beams: int = 1
    do_sample: bool = False
    max_length: int = 20
    min_length: int = 0
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    early_stopping: bool = False
    num_return_sequences: int = 1

    def validate(self, prompt_length: int) -> None:
        """Raise ConfigError for settings HF 4.15 rejects or lavislite does not support."""
        where = "generation config"
        if self.num_beams < 1:
            raise ConfigError(f"{where}: num_beams={self.num_beams}; use an integer >= 1.")
        if self.num_return_sequences < 1:
            raise ConfigError(
                f"{where}: num_return_sequences={self.num_return_sequences}; use an integer >= 1."
            )
        if self.num_beams > 1 and self.do_sample:
            raise ConfigError(
                f"{where}: do_sample=True with num_beams={self.num_beams} (beam sampling) is not supported; "
                "set num_beams=1 for sampling or do_sample=False for beam search."
            )
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ConfigError(
                f"{where}: num_return_sequences={self.num_return_sequences} > num_beams={self.num_beams}; "
                "beam search can return at most num_beams sequences."
            )
        if self.num_beams == 1 and not self.do_sample and self.num_return_sequences != 1:
            raise ConfigError(
                f"{where}: num_return_sequences={self.num_return_sequences} with greedy search would repeat "
                "the same sequence; use do_sample=True or num_beams >= num_return_sequences."
            )
        if self.max_length <= prompt_length:
            raise ConfigError(
                f"{where}: max_length={self.max_length} leaves no room after the {prompt_length}-token prompt; "
                "max_length counts the prompt, so set it above the prompt length."
            )
        if self.repetition_penalty <= 0:
            raise ConfigError(
                f"{where}: repetition_penalty={self.repetition_penalty}; use a positive float (1.0 = off)."
            )
        if self.do_sample and self.temperature <= 0:
            raise ConfigError(f"{where}: temperature={self.temperature}; use a positive float.")
        if self.do_sample and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"{where}: top_p={self.top_p}; use a value in (0, 1] (1.0 = off).")
        if self.top_k < 0:
            raise ConfigError(f"{where}: top_k={self.top_k}; use an integer >= 0 (0 = off).")


# ----------------------------------------------------------------------------------------------
# logits processors and warpers (HF 4.15 semantics)


def apply_repetition_penalty(scores: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Penalise tokens already present in each row: positive scores / penalty, negative * penalty."""
    if penalty == 1.0:
        return scores
    seen = torch.gather(scores, 1, input_ids)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter(1, input_ids, seen)


def apply_min_length(scores: torch.Tensor, cur_len: int, min_length: int, eos_token_id: int) -> torch.Tensor:
    """Forbid eos while the whole sequence (prompt included) is shorter than min_length."""
    if cur_len >= min_length:
        return scores
    scores = scores.clone()
    scores[:, eos_token_id] = -float("inf")
    return scores


def apply_top_k(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the top_k scores of each row (ties with the k-th are kept), the rest -> -inf."""
    if top_k == 0:
        return scores
    top_k = min(top_k, scores.size(-1))
    kth = torch.topk(scores, top_k)[0][..., -1, None]
    return scores.masked_fill(scores < kth, -float("inf"))


def apply_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the highest tokens until their probability mass exceeds top_p (4.15 rule:
    a token is kept when the mass ranked strictly above it is <= top_p)."""
    if top_p >= 1.0:
        return scores
    sorted_scores, sorted_idx = torch.sort(scores, descending=True)
    cum_probs = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove = cum_probs > top_p
    remove[..., 1:] = remove[..., :-1].clone()  # shift right: always keep the token that crosses top_p
    remove[..., 0] = False
    remove = remove.scatter(1, sorted_idx, remove)
    return scores.masked_fill(remove, -float("inf"))


def _process(scores: torch.Tensor, input_ids: torch.Tensor, cfg: GenerationConfig) -> torch.Tensor:
    scores = apply_repetition_penalty(scores, input_ids, cfg.repetition_penalty)
    return apply_min_length(scores, input_ids.shape[-1], cfg.min_length, cfg.eos_token_id)


def _warp(scores: torch.Tensor, cfg: GenerationConfig) -> torch.Tensor:
    if cfg.temperature != 1.0:
        scores = scores / cfg.temperature
    scores = apply_top_k(scores, cfg.top_k)
    return apply_top_p(scores, cfg.top_p)


# ----------------------------------------------------------------------------------------------
# entry point


def generate(
    step_fn: StepFn,
    reorder_fn: ReorderFn,
    input_ids: torch.Tensor,
    *,
    eos_token_id: int,
    pad_token_id: int,
    num_beams: int = 1,
    do_sample: bool = False,
    max_length: int = 20,
    min_length: int = 0,
    top_k: int = 50,
    top_p: float = 1.0,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    length_penalty: float = 1.0,
    early_stopping: bool = False,
    num_return_sequences: int = 1,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """Generate continuations of ``input_ids`` (B, L0) with HF-4.15 semantics.

    Returns (B * num_return_sequences, L) token ids with L <= max_length, prompt included; the
    ``num_return_sequences`` outputs of item b are rows ``b*n ... b*n+n-1``. Sequences that ended
    early are followed by ``pad_token_id`` (beam search: eos, then pads).
    """
    cfg = GenerationConfig(
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        num_beams=num_beams,
        do_sample=do_sample,
        max_length=max_length,
        min_length=min_length,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        repetition_penalty=repetition_penalty,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        num_return_sequences=num_return_sequences,
    )
    return generate_with_config(step_fn, reorder_fn, input_ids, cfg, generator=generator)


@torch.no_grad()
def generate_with_config(
    step_fn: StepFn,
    reorder_fn: ReorderFn,
    input_ids: torch.Tensor,
    cfg: GenerationConfig,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """Same as :func:`generate`, with the settings given as a :class:`GenerationConfig`."""
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ConfigError(
            f"generate: input_ids has shape {tuple(input_ids.shape)}; pass a (batch, prompt_length) "
            "LongTensor with at least one prompt token."
        )
    cfg.validate(input_ids.shape[1])
    if cfg.num_beams > 1:
        return _beam_search(step_fn, reorder_fn, input_ids, cfg)
    return _greedy_or_sample(step_fn, reorder_fn, input_ids, cfg, generator)


def _first_step(
    step_fn: StepFn, reorder_fn: ReorderFn, input_ids: torch.Tensor, expand: int
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """Run the prompt once per input row, then expand logits, cache and ids to ``expand`` rows each."""
    logits, past = step_fn(input_ids, None)
    if expand > 1:
        index = torch.arange(input_ids.shape[0], device=input_ids.device).repeat_interleave(expand)
        logits, input_ids = logits[index], input_ids[index]
        past = reorder_fn(past, index)
    return logits.float(), past, input_ids


def _greedy_or_sample(
    step_fn: StepFn,
    reorder_fn: ReorderFn,
    input_ids: torch.Tensor,
    cfg: GenerationConfig,
    generator: torch.Generator | None,
) -> torch.Tensor:
    logits, past, seqs = _first_step(step_fn, reorder_fn, input_ids, cfg.num_return_sequences)
    unfinished = torch.ones(seqs.shape[0], dtype=torch.bool, device=seqs.device)
    while True:
        scores = _process(logits, seqs, cfg)
        if cfg.do_sample:
            probs = _warp(scores, cfg).softmax(dim=-1)
            next_tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            next_tokens = scores.argmax(dim=-1)
        next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, cfg.pad_token_id))
        seqs = torch.cat([seqs, next_tokens[:, None]], dim=-1)
        unfinished = unfinished & (next_tokens != cfg.eos_token_id)
        if seqs.shape[1] >= cfg.max_length or not bool(unfinished.any()):
            return seqs
        logits, past = step_fn(next_tokens[:, None], past)
        logits = logits.float()


# ----------------------------------------------------------------------------------------------
# beam search (HF 4.15 BeamSearchScorer)


class _Hypotheses:
    """Finished hypotheses of one batch item, exactly as HF 4.15 ``BeamHypotheses`` keeps them."""

    def __init__(self, num_beams: int, length_penalty: float):
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.beams: list[tuple[float, torch.Tensor]] = []
        self.worst_score = 1e9

    def add(self, hyp: torch.Tensor, sum_logprobs: float) -> None:
        # len(hyp) includes the prompt and excludes eos (4.15), unlike transformers >= 4.3x.
        score = sum_logprobs / (hyp.shape[-1] ** self.length_penalty)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def best(self, n: int) -> list[torch.Tensor]:
        ranked = sorted(self.beams, key=lambda b: b[0])  # stable: among ties the later-added wins
        return [ranked.pop()[1] for _ in range(n)]


def _beam_search(
    step_fn: StepFn, reorder_fn: ReorderFn, input_ids: torch.Tensor, cfg: GenerationConfig
) -> torch.Tensor:
    """HF 4.15 beam search.

    Per step: ``log_softmax`` -> repetition penalty -> min-length -> + running beam score; top
    ``2*num_beams`` over ``num_beams*V``. An eos candidate ranked below ``num_beams`` becomes a finished
    hypothesis scored ``sum_logprobs / cur_len**length_penalty`` (cur_len: prompt + tokens, no eos); the
    first ``num_beams`` non-eos candidates become the next beams. An item is done once it holds
    ``num_beams`` hypotheses and ``worst_score >= max(candidate scores) / cur_len**length_penalty``
    (early_stopping=False). At ``max_length`` the open beams of unfinished items join the hypotheses
    with their final scores. The best hypothesis is returned, eos appended if shorter than max_length.
    """
    k, device = cfg.num_beams, input_ids.device
    batch = input_ids.shape[0]
    logits, past, seqs = _first_step(step_fn, reorder_fn, input_ids, k)
    vocab = logits.shape[-1]
    if vocab < 2:
        raise ConfigError(f"generate: the decoder's vocabulary has {vocab} token(s); beam search needs >= 2.")

    hyps = [_Hypotheses(k, cfg.length_penalty) for _ in range(batch)]
    n_hyps = torch.zeros(batch, dtype=torch.long)  # CPU mirrors of hyps for the vectorised done test
    worst = torch.full((batch,), 1e9, dtype=torch.float64)
    done = torch.zeros(batch, dtype=torch.bool)
    beam_scores = torch.zeros(batch, k, device=device)
    beam_scores[:, 1:] = -1e9  # only beam 0 is live at first: the k rows hold the same prompt
    beam_scores = beam_scores.view(-1)
    own_rows = torch.arange(batch * k, device=device).view(batch, k)
    group_offset = own_rows[:, :1]

    while True:
        cur_len = seqs.shape[1]
        scores = _process(F.log_softmax(logits, dim=-1), seqs, cfg) + beam_scores[:, None]
        top_scores, top_idx = torch.topk(scores.view(batch, k * vocab), 2 * k, dim=1, largest=True, sorted=True)
        top_src = top_idx // vocab + group_offset  # global row each candidate extends
        top_tokens = top_idx % vocab
        is_eos = top_tokens == cfg.eos_token_id

        # Next beams: the first k non-eos candidates in rank order (there are >= k, since each of the
        # k beams contributes at most one eos candidate).
        keep = ~is_eos & (torch.cumsum((~is_eos).long(), dim=1) <= k)
        pos = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :k]
        next_scores = top_scores.gather(1, pos)
        next_tokens = top_tokens.gather(1, pos)
        next_src = top_src.gather(1, pos)

        # Finished hypotheses: eos candidates ranked < k of items not yet done (tiny CPU bookkeeping).
        done_dev = done.to(device)
        add = (is_eos[:, :k] & ~done_dev[:, None]).cpu()
        if bool(add.any()):
            add_scores, add_src = top_scores[:, :k].cpu(), top_src[:, :k].cpu()
            for b, r in add.nonzero().tolist():
                hyps[b].add(seqs[int(add_src[b, r])], float(add_scores[b, r]))
                n_hyps[b], worst[b] = len(hyps[b].beams), hyps[b].worst_score
        best_now = top_scores[:, 0].double().cpu()  # sorted: rank 0 is the max over all candidates
        if cfg.early_stopping:
            done_now = n_hyps >= k
        else:
            done_now = (n_hyps >= k) & (worst >= best_now / float(cur_len**cfg.length_penalty))

        # Items already done keep their own rows (4.15 points them at row 0; the output is the same,
        # and keeping rows grouped lets the decoder share cross-attention K/V per item).
        next_scores = torch.where(done_dev[:, None], torch.zeros_like(next_scores), next_scores)
        pads = torch.full_like(next_tokens, cfg.pad_token_id)
        next_tokens = torch.where(done_dev[:, None], pads, next_tokens)
        next_src = torch.where(done_dev[:, None], own_rows, next_src).view(-1)
        done = done | done_now

        seqs = torch.cat([seqs[next_src], next_tokens.view(-1, 1)], dim=-1)
        beam_scores = next_scores.view(-1)
        if bool(done.all()) or seqs.shape[1] >= cfg.max_length:
            break
        past = reorder_fn(past, next_src)
        logits, past = step_fn(next_tokens.view(-1, 1), past)
        logits = logits.float()

    return _finalize(hyps, done, seqs, beam_scores, cfg)


def _finalize(
    hyps: list[_Hypotheses], done: torch.Tensor, seqs: torch.Tensor, beam_scores: torch.Tensor, cfg: GenerationConfig
) -> torch.Tensor:
    k, n = cfg.num_beams, cfg.num_return_sequences
    final_scores = beam_scores.cpu().tolist()
    best: list[torch.Tensor] = []
    for b, item in enumerate(hyps):
        if not bool(done[b]):
            for j in range(k):
                item.add(seqs[b * k + j], final_scores[b * k + j])
        best.extend(item.best(n))
    lengths = [int(h.shape[-1]) for h in best]
    width = min(max(lengths) + 1, cfg.max_length)
    out = seqs.new_full((len(best), width), cfg.pad_token_id)
    for i, (hyp, length) in enumerate(zip(best, lengths)):
        out[i, :length] = hyp
        if length < cfg.max_length:
            out[i, length] = cfg.eos_token_id
    return out


__all__ = [
    "GenerationConfig",
    "apply_min_length",
    "apply_repetition_penalty",
    "apply_top_k",
    "apply_top_p",
    "generate",
    "generate_with_config",
]
