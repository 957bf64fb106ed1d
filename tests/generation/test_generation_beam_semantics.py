"""Beam search and greedy pinned to HF transformers 4.15 (the version BLIP's numbers came from):
the vectorised implementation against a literal per-item transcription of 4.15, and hand-computed
toy trees where 4.15 and transformers 5.23 give different answers."""

from __future__ import annotations

import math

import pytest
import torch

from lavislite.models.generation import generate
from tests.helpers.generation import (
    TableLM,
    gpt2_fns,
    reference_beam_search_415,
    reference_greedy_415,
    tiny_gpt2,
)

EOS, PAD = 1, 0


def _cases():
    # (seed, prompt_len, num_beams, repetition_penalty, min_length, length_penalty, early_stopping, n_return)
    rng = torch.Generator().manual_seed(1234)
    for seed in range(24):
        prompt_len = int(torch.randint(1, 5, (1,), generator=rng))
        num_beams = int(torch.randint(2, 5, (1,), generator=rng))
        yield (
            seed, prompt_len, num_beams,
            [1.0, 1.1, 0.8][seed % 3],
            prompt_len + int(torch.randint(0, 4, (1,), generator=rng)),
            [1.0, 1.0, 0.0, 2.0][seed % 4],
            seed % 5 == 4,
            1 + seed % num_beams,
        )


@pytest.mark.parametrize("case", list(_cases()))
def test_beam_search_equals_literal_415(case):
    seed, prompt_len, num_beams, rep, min_len, lp, early, n_ret = case
    lm = TableLM(seed, vocab=12, eos_token_id=EOS, eos_bias=[0.0, 2.0, 4.0][seed % 3])
    ids = torch.randint(2, 12, (3, prompt_len), generator=torch.Generator().manual_seed(seed))
    kw = dict(num_beams=num_beams, max_length=prompt_len + 9, min_length=min_len, eos_token_id=EOS,
              pad_token_id=PAD, repetition_penalty=rep, length_penalty=lp, early_stopping=early,
              num_return_sequences=n_ret)
    ours = generate(*lm.fns(), ids, **kw)
    ref = reference_beam_search_415(lm.logits, ids, **kw)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("seed", range(8))
def test_greedy_equals_literal_415(seed):
    lm = TableLM(seed, vocab=12, eos_token_id=EOS, eos_bias=2.0)
    ids = torch.randint(2, 12, (4, 3), generator=torch.Generator().manual_seed(seed))
    kw = dict(max_length=14, min_length=5, eos_token_id=EOS, pad_token_id=PAD, repetition_penalty=[1.0, 1.1][seed % 2])
    assert torch.equal(generate(*lm.fns(), ids, **kw), reference_greedy_415(lm.logits, ids, **kw))


def test_blip_like_beam_on_gpt2_equals_literal_415():
    """BLIP captioning settings: 4-token prompt, 3 beams, min 5 / max 12, repetition 1.1, batch 3."""
    model = tiny_gpt2(1, vocab=64, eos_token_id=EOS)
    ids = torch.randint(2, 64, (3, 4), generator=torch.Generator().manual_seed(1))
    kw = dict(num_beams=3, max_length=12, min_length=5, eos_token_id=EOS, pad_token_id=PAD, repetition_penalty=1.1)
    with torch.no_grad():
        ref = reference_beam_search_415(lambda x: model(input_ids=x).logits[:, -1], ids, **kw)
    assert torch.equal(generate(*gpt2_fns(model), ids, **kw), ref)


# ---------------------------------------------------------------------------------------------
# hand-computed toy trees (vocab: 0 pad, 1 eos, 2 A, 3 B; probabilities per generated prefix)


class TreeLM:
    def __init__(self, prompt_len: int, table: dict[tuple[int, ...], list[float]], default: list[float]):
        self.prompt_len, self.table, self.default = prompt_len, table, default

    def fns(self):
        def step_fn(ids, past):
            seqs = ids if past is None else torch.cat([past, ids], dim=1)
            probs = [self.table.get(tuple(row[self.prompt_len:].tolist()), self.default) for row in seqs]
            return torch.tensor(probs).log(), seqs

        return step_fn, lambda past, index: past[index]


def test_toy_415_length_normalisation_and_stop_rule():
    """Prompt of 3 tokens, 2 beams.
    step 1 (cur_len 3): eos p=.5 ranks first -> hyp H1=[p] score ln.5/3 = -0.2310; beams A (ln.3), B (ln.2).
    step 2 (cur_len 4): A.eos = ln.3+ln.9 = -1.3093 ranks first -> hyp H2=[p,A] score -1.3093/4 = -0.3273.
      Two hyps, worst -0.3273 >= best candidate / cur_len = -1.3093/4 -> done (the test is >=).
    4.15 returns H1 = [p, eos]. (transformers 5.23 divides by generated tokens incl. eos: H1 -0.693,
    H2 -0.655, and returns [p, A, eos].)"""
    lm = TreeLM(3, {(): [0, .5, .3, .2], (2,): [0, .9, .05, .05], (3,): [0, .1, .5, .4]}, [0, .25, .25, .5])
    prompt = torch.tensor([[2, 2, 2]])
    assert math.isclose(math.log(.3) + math.log(.9), -1.3093, abs_tol=1e-4)
    kw = dict(num_beams=2, max_length=8, eos_token_id=EOS, pad_token_id=PAD)
    assert generate(*lm.fns(), prompt, **kw).tolist() == [[2, 2, 2, 1]]
    both = generate(*lm.fns(), prompt, num_return_sequences=2, **kw)
    assert both.tolist() == [[2, 2, 2, 1, PAD], [2, 2, 2, 2, 1]]
    # min_length 5 forbids both early eos: the search must go on past cur_len 4
    longer = generate(*lm.fns(), prompt, min_length=5, **kw)
    assert longer.shape[1] > 5 and (longer[0, :5] != EOS).all()


def test_toy_415_max_length_finalisation():
    """1-token prompt, 2 beams, max_length 3.
    step 1: A ln.6, B ln.35, eos ln.05 (rank 2 >= num_beams: not a hypothesis).
    step 2: B.A = ln.35+ln.8 = -1.2730, A.eos = ln.6+ln.4 = -1.4271 (rank 1: hyp [p,A] score -0.7136),
      A.A = ln.6+ln.35 = -1.5606. Length 3 = max_length: open beams B.A, A.A join with sum/3
      (-0.4243, -0.5202) and push the eos hyp out. No eos is appended at max_length.
    (transformers 5.23 finalises ranks < num_beams only, dividing by 2: its second answer is [p, A, eos].)"""
    lm = TreeLM(1, {(): [0, .05, .6, .35], (2,): [0, .4, .35, .25], (3,): [0, .1, .8, .1]}, [0, .3, .3, .4])
    prompt = torch.tensor([[2]])
    out = generate(*lm.fns(), prompt, num_beams=2, max_length=3, eos_token_id=EOS, pad_token_id=PAD,
                   num_return_sequences=2)
    assert out.tolist() == [[2, 3, 2], [2, 2, 2]]


def test_toy_batch_items_finish_independently():
    """Item 0 is done after step 2 (first toy) while item 1 runs to max_length; item 0's rows are then
    fed pad tokens and its answer is unchanged."""
    tables = {(): [0, .5, .3, .2], (2,): [0, .9, .05, .05], (3,): [0, .1, .5, .4]}
    lm = TreeLM(3, tables, [0, .25, .25, .5])
    prompts = torch.tensor([[2, 2, 2], [3, 3, 3]])

    def step_fn(ids, past):  # item 1 (prompt of B's) never likes eos
        logits, seqs = lm.fns()[0](ids, past)
        item1 = seqs[:, 0] == 3
        logits[item1] = torch.tensor([0, 1e-3, .5, .499]).log()
        return logits, seqs

    out = generate(step_fn, lambda p, i: p[i], prompts, num_beams=2, max_length=7, eos_token_id=EOS, pad_token_id=PAD)
    assert out[0].tolist() == [2, 2, 2, 1, PAD, PAD, PAD]
    assert out[1, :3].tolist() == [3, 3, 3] and out.shape == (2, 7) and (out[1, 3:] != EOS).all()
