"""Per-part precision: load_model(dtype=...) takes a dtype, a {submodule: dtype} mapping or a policy."""

from __future__ import annotations

import pytest
import torch

from lavislite.api import load_model
from lavislite.common.errors import ConfigError
from lavislite.models.precision import apply_dtype
from tests.helpers.tiny import make_tiny

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread

IMAGES = torch.rand(2, 3, 32, 32)


def _dtypes(module):
    return {p.dtype for p in module.parameters()}


@pytest.fixture
def caption(tiny_tokenizer):
    return make_tiny("blip_caption", tiny_tokenizer)


def test_one_dtype_for_the_whole_model(tiny_tokenizer):
    model = load_model("blip_caption", "tiny", dtype="bf16", med_overrides={"vocab_size": 30524})
    assert _dtypes(model) == {torch.bfloat16}


def test_mapping_casts_the_named_part_and_runs_across_the_boundary(caption):
    reference = caption.generate({"image": IMAGES}, num_beams=1, max_length=14)
    apply_dtype(caption, {"visual_encoder": "bf16"})
    assert _dtypes(caption.visual_encoder) == {torch.bfloat16} and _dtypes(caption.text_decoder) == {torch.float32}
    # the decoder gets fp32 image states although the encoder computes in bf16
    captions = caption.generate({"image": IMAGES}, num_beams=1, max_length=14)
    assert len(captions) == len(reference) == 2


def test_frozen_half_policy_trains_the_rest_in_fp32(caption):
    caption.visual_encoder.requires_grad_(False)  # e.g. BLIP-2's frozen ViT
    apply_dtype(caption, "frozen_bf16")
    assert _dtypes(caption.visual_encoder) == {torch.bfloat16} and _dtypes(caption.text_decoder) == {torch.float32}
    caption.train()
    loss = caption({"image": IMAGES, "text_input": ["a picture of a red circle", "a picture of two shapes"]}).loss
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.grad is not None for p in caption.text_decoder.parameters() if p.requires_grad)


def test_nested_entries_override_their_parent(caption):
    apply_dtype(caption, {"": "bf16", "text_decoder.bert.encoder": "fp32"})
    assert _dtypes(caption.visual_encoder) == {torch.bfloat16} and _dtypes(caption.text_decoder.bert.embeddings) == {torch.bfloat16}
    assert _dtypes(caption.text_decoder.bert.encoder) == {torch.float32}
    assert len(caption.generate({"image": IMAGES}, num_beams=2, max_length=14)) == 2


def test_bad_specs_name_the_fault(caption):
    with pytest.raises(ConfigError, match="'vision' names no submodule of BlipCaption.*visual_encoder"):
        apply_dtype(caption, {"vision": "bf16"})
    with pytest.raises(ConfigError, match="'fp8'.*frozen_half"):
        apply_dtype(caption, "fp8")
