"""A checkpoint that does not fit is refused in one line instead of loading into a model that outputs garbage.

Each case reproduces a failure seen with the released code (loaded with exit 0, captions "" or ",,,,,").
"""

from __future__ import annotations

import pytest
import torch

from lavislite.api import load_model
from lavislite.common.checkpoint import save_checkpoint
from lavislite.common.errors import CheckpointError

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread

TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 4, "patch_size": 8}
TINY_MED = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
            "max_position_embeddings": 64}


@pytest.fixture(scope="module")
def vocab_dir(tiny_tokenizer_dir):
    return str(tiny_tokenizer_dir)


def _caption(vocab_dir, **over):
    """A tiny caption model from the base_coco type (its yaml sets no vocab_size) on the local tokenizer."""
    torch.manual_seed(0)
    args = dict(load_finetuned=False, load_pretrained=False, image_size=32, vit_overrides=TINY_VIT, med_overrides=TINY_MED, tokenizer=vocab_dir)
    args.update(over)
    return load_model("blip_caption", "base_coco", **args)


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_checkpoint_of_another_size_is_refused(tmp_path, vocab_dir):
    # a run of wider models (the demo's 64-wide caption weights) loaded as another type: every key has the wrong shape
    wide = _caption(vocab_dir, vit_overrides={**TINY_VIT, "embed_dim": 64}, med_overrides={**TINY_MED, "hidden_size": 64})
    path = save_checkpoint(wide, tmp_path / "wide.pth")
    with pytest.raises(CheckpointError) as err:
        _caption(vocab_dir, checkpoint=str(path))
    msg = _one_line(err)
    assert "wide.pth" in msg and "visual_encoder." in msg and "another size" in msg and "strict=False" in msg


def test_checkpoint_missing_half_its_keys_is_refused(tmp_path, vocab_dir):
    sd = _caption(vocab_dir).state_dict()
    half = dict(list(sd.items())[: len(sd) // 2])
    path = save_checkpoint(half, tmp_path / "half.pth")
    with pytest.raises(CheckpointError) as err:
        _caption(vocab_dir, checkpoint=str(path))
    msg = _one_line(err)
    assert "half.pth" in msg and "missing" in msg and "text_decoder." in msg
    # said explicitly, it loads what fits and reports the rest
    model = _caption(vocab_dir, checkpoint=str(path), strict=False)
    assert model.load_report.missing and model.load_report.unloaded_fraction > 0.1


def test_tokenizer_size_reaches_the_model(vocab_dir):
    from lavislite.models.tokenizer import init_tokenizer

    model = _caption(vocab_dir)
    assert model.text_decoder.config.vocab_size == len(init_tokenizer(vocab_dir))
    # an explicit vocab_size still wins
    assert _caption(vocab_dir, med_overrides={**TINY_MED, "vocab_size": 300}).text_decoder.config.vocab_size == 300


def test_official_decoder_with_another_tokenizer_is_refused(tmp_path, vocab_dir):
    # an official-size vocabulary (30524 rows) and a tokenizer of 120 tokens, no vocab override: captioned [''] before
    official = _caption(vocab_dir, med_overrides={**TINY_MED, "vocab_size": 30524})
    path = save_checkpoint(official, tmp_path / "official.pth")
    with pytest.raises(CheckpointError) as err:
        _caption(vocab_dir, checkpoint=str(path))
    msg = _one_line(err)
    assert "vocabulary" in msg and "30524" in msg and "word_embeddings" in msg


def test_load_model_gives_its_report(tmp_path, vocab_dir):
    path = save_checkpoint(_caption(vocab_dir), tmp_path / "fit.pth")
    model = _caption(vocab_dir, checkpoint=str(path))
    assert model.load_report.clean and model.load_report.source == str(path)
    assert _caption(vocab_dir).load_report is None  # random weights: nothing was loaded
