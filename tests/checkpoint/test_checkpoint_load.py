"""read_state_dict / load_checkpoint / save_checkpoint on tiny toy models."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from lavislite.common.checkpoint import (
    LoadReport,
    atomic_save,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
    tied_groups,
)
from lavislite.common.errors import CheckpointError

DIM, VOCAB = 8, 11


class Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, DIM)
        self.register_buffer("position_ids", torch.arange(6).unsqueeze(0))  # persistent, as in BLIP's med.py


class Toy(nn.Module):
    """A pos_embed (1, 1+N, D) like BLIP's ViT, a BERT-style embedding and a decoder tied to it."""

    def __init__(self, grid: int = 2, vocab_head: int = VOCAB) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid * grid, DIM))
        self.embeddings = Embeddings()
        self.proj = nn.Linear(DIM, DIM)
        self.head = nn.Linear(DIM, vocab_head)
        self.decoder = nn.Linear(DIM, VOCAB, bias=False)
        self.decoder.weight = self.embeddings.word_embeddings.weight  # tied, as text_decoder.cls...decoder


def _params_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def model() -> Toy:
    torch.manual_seed(0)
    return Toy()


# -- formats ------------------------------------------------------------------------------------
@pytest.mark.parametrize("wrap", ["model", "state_dict", "bare", "training"])
def test_pth_round_trip(tmp_path, model, wrap):
    sd = model.state_dict()
    obj = {
        "model": {"model": sd},
        "state_dict": {"state_dict": sd},
        "bare": sd,
        "training": {"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]}, "config": {"a": 1}, "epoch": 3},
    }[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    loaded = read_state_dict(path)
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)

    torch.manual_seed(1)
    fresh = Toy()
    report = load_checkpoint(fresh, path)
    assert _params_equal(fresh, model)
    assert report.clean and report.ignored == ["embeddings.position_ids"] and not report.interpolated


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_checkpoint_round_trip(tmp_path, model, suffix):
    path = save_checkpoint(model, tmp_path / f"export{suffix}")
    if suffix == ".pth":
        raw = torch.load(path, weights_only=True)
        assert set(raw) == {"model"}  # the official BLIP layout
    loaded = read_state_dict(path)
    assert loaded.keys() == model.state_dict().keys()  # tied names restored from safetensors metadata
    torch.manual_seed(1)
    fresh = Toy()
    assert load_checkpoint(fresh, path).clean
    assert _params_equal(fresh, model)
    assert fresh.decoder.weight is fresh.embeddings.word_embeddings.weight  # tying survives loading
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"export{suffix}"]


def test_safetensors_shares_tied_storage_once(tmp_path, model):
    from safetensors import safe_open

    path = save_checkpoint(model.state_dict(), tmp_path / "export.safetensors")
    with safe_open(str(path), framework="pt") as f:
        stored = set(f.keys())
    tied = tied_groups(model.state_dict())
    assert tied == [["embeddings.word_embeddings.weight", "decoder.weight"]]
    assert "embeddings.word_embeddings.weight" in stored and "decoder.weight" not in stored


def test_safetensors_partial_views_and_noncontiguous(tmp_path):
    base = torch.arange(24.0).reshape(4, 6)
    sd = {"a": base[:2], "b": base[2:], "t": base.t()}
    loaded = read_state_dict(save_checkpoint(sd, tmp_path / "v.safetensors"))
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


def test_module_prefix_stripped(tmp_path, model):
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "ddp.pth")
    assert read_state_dict(tmp_path / "ddp.pth").keys() == model.state_dict().keys()


def test_save_format_errors(tmp_path, model):
    with pytest.raises(CheckpointError, match="ckpt.weights"):
        save_checkpoint(model, tmp_path / "ckpt.weights")
    with pytest.raises(CheckpointError, match="'onnx'"):
        save_checkpoint(model, tmp_path / "ckpt.pth", format="onnx")
    assert save_checkpoint(model, tmp_path / "ckpt.weights", format="safetensors").is_file()


# -- refusing unsafe / bad files -----------------------------------------------------------------
class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_refused(tmp_path, model):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": model.state_dict(), "payload": _Exploit(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    msg = str(err.value)
    assert str(path) in msg and "non-tensor" in msg and "never unpickles" in msg and "safetensors" in msg
    with pytest.raises(CheckpointError):
        load_checkpoint(model, path)
    assert not marker.exists()


def test_bad_files(tmp_path):
    unknown = tmp_path / "weights.h5"
    unknown.write_bytes(b"\x89HDF")
    with pytest.raises(CheckpointError, match="weights.h5"):
        read_state_dict(unknown)

    truncated = tmp_path / "cut.pth"
    torch.save({"model": {"w": torch.randn(64, 64)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cut.pth"):
        read_state_dict(truncated)

    not_sd = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_sd)
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_state_dict(not_sd)

    mixed = tmp_path / "mixed.pth"
    torch.save({"w": torch.zeros(1), "epoch": 3}, mixed)
    with pytest.raises(CheckpointError, match="epoch"):
        read_state_dict(mixed)

    with pytest.raises(CheckpointError, match="nothere.pth"):
        read_state_dict(tmp_path / "nothere.pth")

    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        read_state_dict(bad_st)


def test_empty_dir_is_explained(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match="notes.txt"):
        read_state_dict(tmp_path)


# -- fitting the model -----------------------------------------------------------------------------
class ToyVit(Toy):
    """Owns its pos_embed like BLIP's ViT: the loader offers other shapes to this hook."""

    def resize_checkpoint_tensor(self, name, tensor, target_shape):
        from lavislite.models.vit import VisionTransformer

        return VisionTransformer.resize_checkpoint_tensor(self, name, tensor, target_shape)


def test_pos_embed_224_into_384():
    # 224/16 = 14x14 patches -> 384/16 = 24x24, one CLS token
    torch.manual_seed(0)
    small, large = ToyVit(grid=14), ToyVit(grid=24)
    sd = small.state_dict()
    sd["pos_embed"] = torch.cat([torch.randn(1, 1, DIM), torch.full((1, 196, DIM), 0.5)], dim=1)
    report = load_checkpoint(large, sd)
    assert report.interpolated == [("pos_embed", (1, 197, DIM), (1, 577, DIM))]
    assert report.clean
    assert torch.equal(large.pos_embed[:, :1], sd["pos_embed"][:, :1])  # CLS kept as is
    assert torch.allclose(large.pos_embed[:, 1:], torch.full((1, 576, DIM), 0.5), atol=1e-5)  # a flat grid stays flat


def test_pos_embed_without_a_resize_hook_is_a_mismatch():
    # the loader knows no model family: a module that does not own a resize hook gets none
    torch.manual_seed(0)
    small, large = Toy(grid=14), Toy(grid=24)
    report = load_checkpoint(large, small.state_dict(), strict=False)
    assert report.mismatched == [("pos_embed", (1, 197, DIM), (1, 577, DIM))] and not report.interpolated


def test_nested_owner_hook_gets_the_relative_name():
    seen = []

    class Owner(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.table = nn.Parameter(torch.zeros(n, DIM))

        def resize_checkpoint_tensor(self, name, tensor, target_shape):
            seen.append(name)
            return tensor[: target_shape[0]]

    outer = nn.Module()
    outer.inner = Owner(3)
    report = load_checkpoint(outer, {"inner.table": torch.ones(5, DIM)})
    assert seen == ["table"] and report.interpolated == [("inner.table", (5, DIM), (3, DIM))]
    assert torch.equal(outer.inner.table, torch.ones(3, DIM))


def test_pos_embed_of_another_width_is_a_mismatch(caplog):
    small = ToyVit(grid=2)
    sd = small.state_dict()
    sd["pos_embed"] = torch.randn(1, 5, DIM * 2)  # e.g. ViT-L into ViT-B: no interpolation can fix it
    before = small.pos_embed.detach().clone()
    report = load_checkpoint(small, sd, strict=False)  # the default refuses it (test_default_refuses_garbage)
    assert report.mismatched == [("pos_embed", (1, 5, 2 * DIM), (1, 5, DIM))] and not report.interpolated
    assert torch.equal(small.pos_embed, before)


def test_shape_mismatch_dropped_and_reported(model, caplog):
    other = Toy(vocab_head=VOCAB + 2)  # e.g. a checkpoint with a bigger vocabulary
    before = model.head.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="lavislite.common.checkpoint"):
        report = load_checkpoint(model, other.state_dict(), strict=False)
    assert {k for k, _, _ in report.mismatched} == {"head.weight", "head.bias"}
    assert ("head.weight", (VOCAB + 2, DIM), (VOCAB, DIM)) in report.mismatched
    assert torch.equal(model.head.weight, before)  # left as initialised
    assert torch.equal(model.proj.weight, other.proj.weight)  # the rest loaded
    assert "head.weight" in caplog.text and "another shape" in caplog.text
    assert not report.clean and "head.weight" in str(report)


def test_missing_and_unexpected(model, caplog):
    sd = model.state_dict()
    del sd["proj.bias"]
    sd["itm_head.weight"] = torch.zeros(2, DIM)
    with caplog.at_level(logging.WARNING, logger="lavislite.common.checkpoint"):
        report = load_checkpoint(Toy(), sd)
    assert report.missing == ["proj.bias"]
    assert report.unexpected == ["itm_head.weight"]
    assert "proj.bias" in caplog.text and "itm_head.weight" in caplog.text


def test_strict_raises_and_leaves_model_untouched(model):
    sd = model.state_dict()
    del sd["proj.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["head.weight"] = torch.zeros(VOCAB + 1, DIM)
    torch.manual_seed(5)
    target = Toy()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(target, sd, strict=True)
    msg = str(err.value)
    assert "proj.bias" in msg and "extra.weight" in msg and "head.weight" in msg and "strict=False" in msg
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    assert load_checkpoint(Toy(), model.state_dict(), strict=True).clean  # a perfect fit passes


def test_default_refuses_garbage_and_leaves_the_model_untouched(model):
    sd = Toy(vocab_head=VOCAB + 2).state_dict()  # a third of the toy's parameters have another shape
    target = Toy()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(target, sd)
    msg = str(err.value)
    assert "\n" not in msg and "head.weight (13, 8) (checkpoint) vs (11, 8) (model)" in msg and "strict=False" in msg
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    report = load_checkpoint(target, sd, strict=False)
    assert report.unloaded_fraction > 0.3 and report.dropped_fraction > 0.25


def test_default_allows_a_small_partial_load(model):
    sd = model.state_dict()
    del sd["proj.bias"]  # 8 of 299 parameters: a new head, say
    report = load_checkpoint(Toy(), sd)
    assert report.missing == ["proj.bias"] and 0 < report.unloaded_fraction < 0.1 and report.dropped_fraction == 0


def test_position_ids_ignored(model):
    sd = model.state_dict()
    sd["embeddings.position_ids"] = torch.arange(512).unsqueeze(0)  # another length: would mismatch
    sd["text_encoder.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    report = load_checkpoint(Toy(), sd)
    assert sorted(report.ignored) == ["embeddings.position_ids", "text_encoder.embeddings.position_ids"]
    assert report.clean
    # and a checkpoint without them does not report the model's buffer missing
    del sd["embeddings.position_ids"]
    assert load_checkpoint(Toy(), sd).missing == []


@pytest.mark.parametrize("present", ["embeddings.word_embeddings.weight", "decoder.weight"])
def test_tied_weights_not_missing(model, present):
    sd = model.state_dict()
    absent = "decoder.weight" if present == "embeddings.word_embeddings.weight" else "embeddings.word_embeddings.weight"
    del sd[absent]
    fresh = Toy()
    report = load_checkpoint(fresh, sd)
    assert report.missing == [] and report.clean
    assert torch.equal(fresh.decoder.weight, model.decoder.weight)


def test_adapt_state_dict_hook(model):
    class Renamed(Toy):
        def adapt_state_dict(self, sd):
            return {k.replace("old_proj.", "proj."): v for k, v in sd.items()}

    sd = {k.replace("proj.", "old_proj."): v for k, v in model.state_dict().items()}
    fresh = Renamed()
    assert load_checkpoint(fresh, sd).clean
    assert torch.equal(fresh.proj.weight, model.proj.weight)


def test_report_str_summarises_layers():
    report = LoadReport(source="x.pth", unexpected=[f"text_decoder.layer.{i}.w" for i in range(12)])
    assert "text_decoder.layer.*.w x12" in str(report)


def test_atomic_save_crash_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_1.pth"
    atomic_save({"epoch": 1}, path)

    def crash(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["checkpoint_1.pth"]
