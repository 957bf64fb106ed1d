"""transformers-format BLIP checkpoints: directories, shards, hub ids (offline, from a local hub cache)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from lavislite.common.checkpoint import read_state_dict
from lavislite.common.errors import CheckpointError

HUB_ID = "Salesforce/blip-image-captioning-base"
BLIP = "blip_transformers"  # the converter BLIP models name in checkpoint_converters


def _hf_state_dict() -> dict[str, torch.Tensor]:
    """A few keys of BlipForConditionalGeneration, with tiny shapes."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return {
        "vision_model.embeddings.class_embedding": r(1, 1, 8),
        "vision_model.embeddings.position_embedding": r(1, 5, 8),
        "vision_model.embeddings.patch_embedding.weight": r(8, 3, 4, 4),
        "vision_model.encoder.layers.0.self_attn.qkv.weight": r(24, 8),
        "vision_model.encoder.layers.0.self_attn.projection.weight": r(8, 8),
        "vision_model.encoder.layers.0.layer_norm1.weight": r(8),
        "vision_model.encoder.layers.0.mlp.fc1.weight": r(16, 8),
        "vision_model.post_layernorm.weight": r(8),
        "text_decoder.bert.embeddings.word_embeddings.weight": r(30, 8),
        "text_decoder.cls.predictions.bias": r(30),
    }


@pytest.fixture
def hf():
    return pytest.importorskip("lavislite.models.blip.convert", reason="lavislite.models.blip.convert not written yet")


def _assert_converted(sd, hf_module):
    expected = hf_module.convert_hf_state_dict(_hf_state_dict())
    assert sd.keys() == expected.keys()
    assert all(torch.equal(sd[k], expected[k]) for k in sd)
    # the vision tree goes back to the official names, text keys stay as they are
    assert "visual_encoder.blocks.0.attn.qkv.weight" in sd
    assert "text_decoder.cls.predictions.bias" in sd
    assert not any(k.startswith("vision_model.") for k in sd)


@pytest.mark.parametrize("layout", ["safetensors", "bin", "sharded"])
def test_transformers_directory(tmp_path, hf, layout):
    from safetensors.torch import save_file

    sd = _hf_state_dict()
    (tmp_path / "config.json").write_text("{}")
    if layout == "safetensors":
        save_file(sd, str(tmp_path / "model.safetensors"))
        torch.save({"junk": torch.zeros(1)}, tmp_path / "pytorch_model.bin")  # safetensors is preferred
    elif layout == "bin":
        torch.save(sd, tmp_path / "pytorch_model.bin")
    else:
        keys = sorted(sd)
        shards = {"model-00001-of-00002.safetensors": keys[:4], "model-00002-of-00002.safetensors": keys[4:]}
        for name, part in shards.items():
            save_file({k: sd[k] for k in part}, str(tmp_path / name))
        weight_map = {k: name for name, part in shards.items() for k in part}
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    _assert_converted(read_state_dict(tmp_path, converters=[BLIP]), hf)


def test_single_hf_file_is_converted(tmp_path, hf):
    torch.save(_hf_state_dict(), tmp_path / "hf_weights.bin")
    _assert_converted(read_state_dict(tmp_path / "hf_weights.bin", converters=[BLIP]), hf)


def test_missing_shard_named(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-1.safetensors"}}))
    with pytest.raises(CheckpointError, match="model-1.safetensors"):
        read_state_dict(tmp_path)


def test_hub_id_from_local_hub_cache(tmp_path, hf, monkeypatch):
    """A hub id resolves offline from a hub cache laid out the way huggingface_hub writes it."""
    from safetensors.torch import save_file

    monkeypatch.setenv("LAVISLITE_OFFLINE", "1")
    repo = tmp_path / "huggingface" / ("models--" + HUB_ID.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (snapshot / "config.json").write_text("{}")
    save_file(_hf_state_dict(), str(snapshot / "model.safetensors"))
    _assert_converted(read_state_dict(HUB_ID, cache_dir=tmp_path, converters=[BLIP]), hf)


def test_hub_id_offline_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LAVISLITE_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        read_state_dict(HUB_ID, cache_dir=tmp_path)
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert HUB_ID in msg and "offline" in msg and "local" in msg


def test_missing_relative_checkpoint_is_not_a_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict("checkpoints/model_base.pth")
