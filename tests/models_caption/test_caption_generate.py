"""BlipCaption generation: cached == uncached decoding, batched == one-by-one, seeded sampling, the
original's decoding (prompt slicing, num_captions grouping) and argument errors."""

import pytest
import torch

from tests.helpers.caption import randomise, trim
from tests.helpers.tiny import make_tiny


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    m = make_tiny("blip_caption", tiny_tokenizer, seed=2).eval()
    randomise(m, 5)
    with torch.no_grad():
        m.text_decoder.cls.predictions.bias[tiny_tokenizer.sep_token_id] = 1.0  # captions of different lengths
    return m


def _uncached_fns(model, image_embeds):
    """Recompute the whole sequence each step; 'past' = (ids so far, image row of each text row)."""
    n = image_embeds.shape[0]

    def step(ids, past):
        if past is None:
            rows = torch.arange(n)
        else:
            seq, rows = past
            ids = torch.cat([seq, ids], dim=1)
        logits = model.text_decoder(ids, encoder_hidden_states=image_embeds[rows]).logits[:, -1]
        return logits, (ids, rows)

    def reorder(past, index):
        return past[0][index], past[1][index]

    return step, reorder


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_equals_uncached(model, images, num_beams):
    from lavislite.models.generation import generate

    tok = model.tokenizer
    with torch.no_grad():
        got = model.generate_ids({"image": images}, num_beams=num_beams, max_length=16, min_length=5)
        embeds = model.forward_encoder({"image": images})
        step, reorder = _uncached_fns(model, embeds)
        ref = generate(step, reorder, model.prompt_ids(images.shape[0]), eos_token_id=tok.sep_token_id,
                       pad_token_id=tok.pad_token_id, num_beams=num_beams, max_length=16, min_length=5)
    assert got.tolist() == ref.tolist()


def test_batched_equals_one_by_one(model, images):
    pad = model.tokenizer.pad_token_id
    batched = model.generate_ids({"image": images}, num_beams=3, max_length=20, min_length=5)
    lengths = {len(trim(r, pad)) for r in batched}
    assert len(lengths) > 1, "the test needs captions of different lengths"
    for i in range(images.shape[0]):
        single = model.generate_ids({"image": images[i : i + 1]}, num_beams=3, max_length=20, min_length=5)
        assert trim(single[0], pad) == trim(batched[i], pad)
    assert model.generate({"image": images}, max_length=20, min_length=5) == [
        model.generate({"image": images[i : i + 1]}, max_length=20, min_length=5)[0] for i in range(images.shape[0])
    ]


def test_nucleus_sampling_seeded(model, images):
    def run(seed):
        return model.generate({"image": images}, use_nucleus_sampling=True, num_captions=3, max_length=20, min_length=5,
                              generator=torch.Generator().manual_seed(seed))

    first = run(0)
    assert len(first) == 3 * images.shape[0]
    assert first == run(0)
    assert first != run(1)
    torch.manual_seed(7)
    a = model.generate({"image": images}, use_nucleus_sampling=True, max_length=20)
    torch.manual_seed(7)
    assert a == model.generate({"image": images}, use_nucleus_sampling=True, max_length=20)


def test_nucleus_uses_original_settings(model, images, monkeypatch):
    import lavislite.models.blip.caption as caption

    seen = {}

    def spy(step, reorder, prompt, **kw):
        seen.update(kw)
        return prompt

    monkeypatch.setattr(caption, "generate", spy)
    model.generate_ids({"image": images}, use_nucleus_sampling=True, top_p=0.8, repetition_penalty=1.0)
    assert (seen["do_sample"], seen["top_k"], seen["top_p"], seen["repetition_penalty"]) == (True, 50, 0.8, 1.1)


def test_decode_slices_prompt_and_groups_captions(model, images):
    ids = model.generate_ids({"image": images}, num_beams=3, num_captions=2, max_length=14, min_length=5)
    assert ids.shape[0] == 2 * images.shape[0]
    full = model.tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert all(t.startswith(model.prompt.strip()) for t in full)  # a subword may follow without a space (BLIP slices anyway)
    caps = model.generate({"image": images}, num_beams=3, num_captions=2, max_length=14, min_length=5)
    assert caps == [t[len(model.prompt):] for t in full]
    # the best beam of each image comes first in its group
    best = model.generate({"image": images}, num_beams=3, max_length=14, min_length=5)
    assert caps[::2] == best


def test_argument_errors(model, images):
    from lavislite.common.errors import ConfigError, DataError

    with pytest.raises(ConfigError, match="num_captions"):
        model.generate({"image": images}, num_beams=2, num_captions=3)
    with pytest.raises(ConfigError, match="max_length"):
        model.generate({"image": images}, max_length=4)  # the 4 prompt tokens fill it
    with pytest.raises(DataError, match="samples\\['image'\\]"):
        model.generate({"images": images})
