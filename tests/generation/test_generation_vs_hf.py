"""lavislite's generate against transformers 5.23 ``generate`` on a tiny seeded GPT-2.

Where 5.23's beam search differs from 4.15 (which lavislite reproduces), the comparison is limited
to the cases where the two provably agree; the differing corners are pinned against a literal 4.15
transcription and hand-computed cases in test_generation_beam_semantics.py. 5.23 vs 4.15:
  * finished-hypothesis length: 5.23 divides by the generated length incl. eos, 4.15 by the whole
    sequence incl. prompt excl. eos (equal when the prompt is 1 token);
  * at max_length 5.23 divides open beams by max_length - prompt, 4.15 by max_length;
  * early_stopping=False stop test: 5.23 uses the best running (non-eos) beam, 4.15 the best of all
    2*num_beams candidates incl. eos ones (equal under early_stopping=True);
  * 5.23 fills beam outputs with eos when pad_token_id == 0 (``pad or eos``), so the tests use pad 3.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from lavislite.models.generation import generate
from tests.helpers.generation import gpt2_fns, tiny_gpt2

EOS, PAD = 1, 3


def _prompts(seed: int, batch: int, length: int) -> torch.Tensor:
    return torch.randint(4, 64, (batch, length), generator=torch.Generator().manual_seed(seed))


def _hf(model, ids, **kw):
    from transformers.utils import logging

    logging.set_verbosity_error()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return model.generate(ids, attention_mask=torch.ones_like(ids), eos_token_id=EOS, pad_token_id=PAD,
                              length_penalty=1.0, **kw)


def _ours(model, ids, **kw):
    step_fn, reorder_fn = gpt2_fns(model)
    return generate(step_fn, reorder_fn, ids, eos_token_id=EOS, pad_token_id=PAD, **kw)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("repetition_penalty", [1.0, 1.1])
def test_greedy_matches_hf(seed, repetition_penalty):
    model = tiny_gpt2(seed, eos_logit=9.5)
    ids = _prompts(seed, batch=4, length=4)
    kw = dict(num_beams=1, do_sample=False, max_length=16, min_length=7, repetition_penalty=repetition_penalty)
    ours, hf = _ours(model, ids, **kw), _hf(model, ids, **kw)
    assert torch.equal(ours, hf)
    # the case is non-trivial: some rows stop early (eos then pad), none emits eos before min_length
    assert (ours == EOS).any(), "no row ended; raise eos_logit"
    assert not (ours[:, :7] == EOS).any()


@pytest.mark.parametrize("repetition_penalty", [1.0, 1.1])
def test_beam_without_eos_matches_hf(repetition_penalty):
    """eos impossible: every beam runs to max_length; both libraries rank by the same sum."""
    model = tiny_gpt2(2, eos_logit=-100.0)
    ids = _prompts(2, batch=3, length=4)
    kw = dict(num_beams=3, max_length=12, min_length=6, early_stopping=False, repetition_penalty=repetition_penalty)
    ours, hf = _ours(model, ids, **kw), _hf(model, ids, **kw)
    assert ours.shape == (3, 12)
    assert torch.equal(ours, hf)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("repetition_penalty", [1.0, 1.1])
@pytest.mark.parametrize("num_return_sequences", [1, 3])
def test_beam_with_eos_matches_hf(seed, repetition_penalty, num_return_sequences):
    """Eos-finished hypotheses, min_length, batch: 1-token prompt and every item finished before
    max_length, early_stopping=True (the regime where 5.23 and 4.15 provably agree)."""
    model = tiny_gpt2(seed, eos_logit=11.0)
    ids = _prompts(seed, batch=3, length=1)
    kw = dict(num_beams=3, max_length=16, min_length=5, early_stopping=True,
              repetition_penalty=repetition_penalty, num_return_sequences=num_return_sequences)
    ours, hf = _ours(model, ids, **kw), _hf(model, ids, **kw)
    assert (ours == EOS).any(dim=1).all(), "precondition: every returned hypothesis ended with eos"
    assert not (ours[:, :5] == EOS).any()
    assert torch.equal(ours, hf)


def test_sampling_matches_hf_with_global_seed():
    """top-k + top-p + repetition penalty + min_length, 2 samples per prompt, default RNG."""
    model = tiny_gpt2(4, eos_logit=9.0)
    ids = _prompts(4, batch=3, length=2)
    kw = dict(do_sample=True, top_k=10, top_p=0.9, repetition_penalty=1.1, max_length=16, min_length=4,
              num_return_sequences=2)
    torch.manual_seed(7)
    ours = _ours(model, ids, **kw)
    torch.manual_seed(7)
    hf = _hf(model, ids, **kw)
    assert torch.equal(ours, hf)
