"""One smoke test over every built-in model type that has a ``tiny`` variant (timm-style): a new head
or family is tested the day it registers. Forward, backward (every trainable parameter receives a
gradient), and a save/load round trip that reproduces the outputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.helpers.tiny import tiny_model_types

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread

TINY_TYPES = [pytest.param(name, mtype, id=f"{name}:{mtype}") for name, mtype in tiny_model_types(builtin_only=True)]


def _tensors(out) -> list[torch.Tensor]:
    """Every floating tensor of a model output (tensor, dataclass, dict, tuple), in a fixed order."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if dataclasses.is_dataclass(out):
        out = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    if isinstance(out, dict):
        return [t for key in sorted(out) for t in _tensors(out[key])]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _tensors(item)]
    return []


def _run(model, samples):
    """The head's main call: ``forward``; ``extract_features`` for a feature extractor (no forward)."""
    if type(model).forward is torch.nn.Module.forward:
        return model.extract_features(samples)
    return model(samples)


def test_every_tiny_type_is_collected():
    assert len(TINY_TYPES) >= 7  # the BLIP heads; other families add theirs by registering


@pytest.mark.parametrize("name,mtype", TINY_TYPES)
def test_forward_backward_every_parameter_gets_a_gradient(name, mtype, tiny_tokenizer):
    from tests.helpers.tiny import make_tiny

    model = make_tiny(name, tiny_tokenizer, seed=0, model_type=mtype).train()
    out = _run(model, model.example_samples(2))
    outputs = _tensors(out)
    assert outputs and all(torch.isfinite(t).all() for t in outputs), f"{name}:{mtype} gave no finite output"
    loss = getattr(out, "loss", None)
    objective = loss if loss is not None else sum(t.float().sum() for t in outputs)
    if not objective.requires_grad:
        pytest.skip(f"{name}:{mtype} is an inference-only head: its main call runs without autograd")
    model.zero_grad(set_to_none=True)
    objective.backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert trainable, f"{name}:{mtype} has no trainable parameters"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if loss is not None:  # a training head: its loss must reach every trainable parameter
        assert no_grad == [], f"{name}:{mtype}: the training loss reaches no gradient to {no_grad[:10]}"
    else:  # an inference head (e.g. ITM's forward uses one of its two heads): gradients must flow end to end
        assert len(no_grad) < len(trainable), f"{name}:{mtype}: no gradient reaches any parameter"


@pytest.mark.parametrize("name,mtype", TINY_TYPES)
def test_save_load_round_trip_reproduces_outputs(name, mtype, tiny_tokenizer, tmp_path):
    from lavislite.common.checkpoint import save_checkpoint
    from tests.helpers.tiny import make_tiny

    src = make_tiny(name, tiny_tokenizer, seed=1, model_type=mtype).eval()
    path = save_checkpoint(src, tmp_path / "weights.safetensors")
    dst = make_tiny(name, tiny_tokenizer, seed=2, model_type=mtype).eval()
    report = dst.load_checkpoint(str(path))
    assert not report.missing and not report.unexpected and not report.mismatched, str(report)
    torch.manual_seed(0)
    samples = src.example_samples(2)
    with torch.no_grad():
        want, got = _tensors(_run(src, samples)), _tensors(_run(dst, samples))
    assert len(want) == len(got) > 0
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
