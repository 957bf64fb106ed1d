"""from_config with a checkpoint builds on the meta device (no random init) and gives the same weights as the
plain path (build with random init, then load_checkpoint): ties, momentum copies, missing keys, interpolation."""

from __future__ import annotations

import itertools

import pytest
import torch

import lavislite.models  # noqa: F401  (registers the models)
from lavislite.common.checkpoint import load_checkpoint
from lavislite.common.config import model_type_config
from lavislite.common.errors import CheckpointError
from lavislite.common.registry import registry

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread

TOKENIZER = object()  # the tiny models never tokenize here


def _build(arch: str, seed: int = 0, **overrides):
    cls = registry.get_model_class(arch)
    torch.manual_seed(seed)
    return cls.from_config(model_type_config(cls, "tiny", overrides).model, tokenizer=TOKENIZER)


def _checkpoint(tmp_path, arch: str, drop=lambda key: False, **overrides):
    sd = {k: v for k, v in _build(arch, seed=1, **overrides).state_dict().items() if not drop(k)}
    path = tmp_path / f"{arch}.pth"
    torch.save({"model": sd}, path)
    return path


def _plain_and_fast(arch: str, path, **overrides):
    plain = _build(arch)
    plain.load_checkpoint(path)
    fast = _build(arch, checkpoint=str(path), **overrides)
    return plain, fast


def _assert_same_weights(plain, fast):
    a, b = plain.state_dict(), fast.state_dict()
    assert a.keys() == b.keys()
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    assert not [n for n, t in itertools.chain(fast.named_parameters(), fast.named_buffers()) if t.is_meta]


@pytest.mark.parametrize("arch", ["blip_caption", "blip_pretrain"])
def test_full_checkpoint_same_weights_no_random_init(tmp_path, arch):
    path = _checkpoint(tmp_path, arch)
    plain = _build(arch)
    plain.load_checkpoint(path)
    torch.manual_seed(0)
    rng = torch.random.get_rng_state()
    fast = registry.get_model_class(arch).from_config(
        model_type_config(registry.get_model_class(arch), "tiny", {"checkpoint": str(path)}).model, tokenizer=TOKENIZER)
    assert torch.equal(torch.random.get_rng_state(), rng)  # nothing was drawn: no random init ran
    _assert_same_weights(plain, fast)


def test_caption_lm_head_stays_tied(tmp_path):
    _, fast = _plain_and_fast("blip_caption", _checkpoint(tmp_path, "blip_caption"))
    dec = fast.text_decoder
    assert dec.cls.predictions.decoder.weight is dec.bert.embeddings.word_embeddings.weight
    assert dec.cls.predictions.decoder.bias is dec.cls.predictions.bias
    assert len(list(fast.parameters())) == len({id(p) for p in fast.parameters()})


def test_pretrain_sharing_and_momentum(tmp_path):
    # no momentum keys in the checkpoint (e.g. a fine-tuned file): the copies follow the loaded online weights
    path = _checkpoint(tmp_path, "blip_pretrain", drop=lambda k: "_m." in k)
    plain, fast = _plain_and_fast("blip_pretrain", path)
    _assert_same_weights(plain, fast)
    enc, dec = fast.text_encoder.encoder.layer[0], fast.text_decoder.bert.encoder.layer[0]
    assert enc.crossattention is dec.crossattention and enc.attention is not dec.attention
    assert fast.text_decoder.cls.predictions.decoder.weight is fast.text_decoder.bert.embeddings.word_embeddings.weight
    for online, momentum in fast.momentum_pairs():
        assert all(torch.equal(p, q) for p, q in zip(online.parameters(), momentum.parameters()))
        assert all(p.data_ptr() != q.data_ptr() for p, q in zip(online.parameters(), momentum.parameters()))


def test_missing_keys_get_the_plain_init(tmp_path):
    dropped = "text_decoder.bert.encoder.layer.1.intermediate.dense.weight"
    path = _checkpoint(tmp_path, "blip_caption", drop=lambda k: k == dropped or k.startswith("visual_encoder.blocks.0."))
    plain, fast = _plain_and_fast("blip_caption", path)
    _assert_same_weights(plain, fast)  # same random stream as the plain path
    w = fast.state_dict()[dropped]
    assert 0.015 < float(w.std()) < 0.025  # BERT's normal(0, 0.02), not zeros or garbage


def test_pos_embed_interpolated(tmp_path):
    path = _checkpoint(tmp_path, "blip_caption", image_size=48)
    plain, fast = _plain_and_fast("blip_caption", path)
    assert fast.visual_encoder.pos_embed.shape[1] == 1 + (32 // 8) ** 2
    _assert_same_weights(plain, fast)


def test_one_checkpoint_tensor_into_untied_names_is_copied(tmp_path):
    # a pretrain file: its text_encoder/text_decoder share storage; NLVR's twins read the same tensor twice
    path = _checkpoint(tmp_path, "blip_pretrain")
    plain = _build("blip_nlvr")
    plain.load_checkpoint(path)
    fast = _build("blip_nlvr", checkpoint=str(path))
    _assert_same_weights(plain, fast)
    ptrs = [p.data_ptr() for p in fast.parameters() if p.numel()]
    assert len(ptrs) == len(set(ptrs))


def test_meta_model_without_build_fresh_refuses_gaps(tmp_path):
    path = _checkpoint(tmp_path, "blip_caption", drop=lambda k: k.startswith("visual_encoder.norm."))
    cls = registry.get_model_class("blip_caption")
    with torch.device("meta"):
        model = cls.from_config(model_type_config(cls, "tiny", {}).model, tokenizer=TOKENIZER)
    with pytest.raises(CheckpointError, match="visual_encoder.norm"):
        load_checkpoint(model, path)
