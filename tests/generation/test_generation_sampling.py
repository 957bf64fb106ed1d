"""Sampling (seeded, top-k/top-p support, min_length), the step_fn/reorder_fn contract (cache
expansion, grouped rows, cached == uncached), output shapes and input errors."""

from __future__ import annotations

import pytest
import torch

from lavislite.common.errors import ConfigError
from lavislite.models.generation import apply_top_p, generate
from tests.helpers.generation import TableLM, gpt2_fns, tiny_gpt2

EOS, PAD = 1, 0
PROBS = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])  # token 1 is eos, p=.25


def _fixed_fns(probs: torch.Tensor = PROBS):
    """A decoder whose next-token distribution never changes; 'past' counts calls per row."""
    def step_fn(ids, past):
        return probs.log().expand(ids.shape[0], -1).clone(), ids.shape[0]

    return step_fn, lambda past, index: len(index)


def _sample_first_tokens(n: int, seed: int = 0, **kw) -> torch.Tensor:
    prompt = torch.full((n, 1), 5)
    g = torch.Generator().manual_seed(seed)
    out = generate(*_fixed_fns(), prompt, do_sample=True, max_length=2, eos_token_id=EOS, pad_token_id=PAD,
                   generator=g, **kw)
    return out[:, 1]


@pytest.mark.parametrize(
    "top_k, top_p, support",
    [
        (0, 0.7, {0, 1, 2}),  # mass above token 3 is .8 > .7: outside the nucleus
        (0, 0.39, {0}),       # 4.15 keeps a token while the mass ranked above it is <= top_p
        (0, 0.41, {0, 1}),
        (2, 1.0, {0, 1}),
        (3, 0.5, {0, 1}),
        (0, 1.0, {0, 1, 2, 3, 4, 5}),
    ],
)
def test_sampling_support_is_top_k_then_top_p(top_k, top_p, support):
    tokens = _sample_first_tokens(6000, top_k=top_k, top_p=top_p)
    assert set(tokens.tolist()) == support
    # frequencies follow the renormalised distribution on the support
    kept = torch.tensor(sorted(support))
    expected = PROBS[kept] / PROBS[kept].sum()
    observed = torch.stack([(tokens == t).float().mean() for t in kept])
    assert torch.allclose(observed, expected, atol=0.03)


def test_apply_top_p_keeps_the_token_that_crosses_top_p():
    scores = PROBS.log()[None]
    kept = torch.isfinite(apply_top_p(scores, 0.5)).nonzero()[:, 1].tolist()
    assert kept == [0, 1]  # .4 < .5, the token reaching .65 is kept, the rest dropped


def test_sampling_reproducible_with_generator_and_respects_min_length():
    lm = TableLM(3, vocab=12, eos_token_id=EOS, eos_bias=6.0)  # eos very likely
    prompt = torch.randint(2, 12, (4, 2), generator=torch.Generator().manual_seed(0))
    kw = dict(do_sample=True, top_k=50, top_p=0.9, repetition_penalty=1.1, max_length=20, min_length=6,
              eos_token_id=EOS, pad_token_id=PAD, num_return_sequences=3)
    runs = [generate(*lm.fns(), prompt, generator=torch.Generator().manual_seed(s), **kw) for s in (11, 11, 12)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2]) or runs[0].shape != runs[2].shape
    out = runs[0]
    assert out.shape[0] == 12 and out.shape[1] <= 20
    assert torch.equal(out[:, :2], prompt.repeat_interleave(3, 0))
    assert not (out[:, :6] == EOS).any() and (out == EOS).any(dim=1).all()
    # after eos a row only holds pad
    for row in out.tolist():
        assert set(row[row.index(EOS) + 1:]) <= {PAD}


def test_temperature_sharpens():
    hot = _sample_first_tokens(4000, top_k=0, temperature=2.0)
    cold = _sample_first_tokens(4000, top_k=0, temperature=0.25)
    assert (cold == 0).float().mean() > 0.75 > (hot == 0).float().mean()


# ---------------------------------------------------------------------------------------------
# step_fn / reorder_fn contract


def test_cache_expansion_and_grouped_reorders():
    lm = TableLM(5, vocab=12, eos_token_id=EOS, eos_bias=1.0)
    step, _ = lm.fns()
    calls = {"step": [], "reorder": []}

    def step_fn(ids, past):
        calls["step"].append(tuple(ids.shape))
        return step(ids, past)

    def reorder_fn(past, index):
        calls["reorder"].append(index.clone())
        return past[index]

    prompt = torch.randint(2, 12, (3, 4), generator=torch.Generator().manual_seed(5))
    generate(step_fn, reorder_fn, prompt, num_beams=4, max_length=12, eos_token_id=EOS, pad_token_id=PAD)
    assert calls["step"][0] == (3, 4)  # prompt once per input row
    assert all(shape == (12, 1) for shape in calls["step"][1:])
    assert torch.equal(calls["reorder"][0], torch.arange(3).repeat_interleave(4))
    for index in calls["reorder"][1:]:  # beams never leave their item's group of rows
        assert torch.equal(index // 4, torch.arange(3).repeat_interleave(4))
    assert len(calls["reorder"]) == len(calls["step"])  # the expansion, then one before each later step


def test_greedy_never_reorders():
    lm = TableLM(6, vocab=12)

    def reorder_fn(past, index):
        raise AssertionError("greedy search must not touch the cache order")

    out = generate(lm.fns()[0], reorder_fn, torch.tensor([[2, 3]]), max_length=6, eos_token_id=EOS, pad_token_id=PAD)
    assert out.shape[0] == 1 and 2 < out.shape[1] <= 6


@pytest.mark.parametrize(
    "kw",
    [
        dict(num_beams=1, repetition_penalty=1.1),
        dict(num_beams=3, repetition_penalty=1.1, min_length=6, num_return_sequences=2),
        dict(do_sample=True, top_p=0.9, num_return_sequences=2),
    ],
)
def test_cached_and_uncached_step_fn_agree(kw):
    model = tiny_gpt2(7, eos_logit=9.5)
    prompt = torch.randint(4, 64, (2, 3), generator=torch.Generator().manual_seed(7))
    outs = []
    for cached in (True, False):
        g = torch.Generator().manual_seed(3)
        with torch.inference_mode():
            outs.append(generate(*gpt2_fns(model, cached), prompt, max_length=14, eos_token_id=EOS,
                                 pad_token_id=PAD, generator=g, **kw))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("num_beams, n_return", [(1, 1), (3, 1), (3, 3), (4, 2)])
def test_beam_output_shapes(num_beams, n_return):
    lm = TableLM(8, vocab=12, eos_token_id=EOS, eos_bias=2.0)
    prompt = torch.randint(2, 12, (5, 2), generator=torch.Generator().manual_seed(8))
    out = generate(*lm.fns(), prompt, num_beams=num_beams, num_return_sequences=n_return, max_length=9,
                   eos_token_id=EOS, pad_token_id=PAD)
    assert out.dtype == torch.long and out.shape[0] == 5 * n_return and 2 < out.shape[1] <= 9
    assert torch.equal(out[:, :2], prompt.repeat_interleave(n_return, 0))


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(max_length=3), "max_length=3"),
        (dict(num_beams=2, num_return_sequences=3), "num_return_sequences=3"),
        (dict(num_beams=2, do_sample=True), "do_sample=True"),
        (dict(num_return_sequences=2), "greedy"),
        (dict(num_beams=0), "num_beams=0"),
        (dict(do_sample=True, top_p=0.0), "top_p=0.0"),
        (dict(repetition_penalty=0.0), "repetition_penalty=0.0"),
    ],
)
def test_bad_settings_raise_config_error(kw, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        generate(*_fixed_fns(), torch.tensor([[2, 3, 4]]), eos_token_id=EOS, pad_token_id=PAD, **kw)


def test_bad_input_ids_shape():
    with pytest.raises(ConfigError, match="input_ids"):
        generate(*_fixed_fns(), torch.tensor([2, 3]), eos_token_id=EOS, pad_token_id=PAD)
