"""Model folders (save_pretrained / export_model / ``lavislite export`` -> load by path) and the one image
size (issue 15 items 1 and 3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import lavislite
from lavislite.cli import main
from lavislite.common.errors import CheckpointError, ConfigError
from lavislite.models.folder import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer

    out = tmp_path_factory.mktemp("folder_vocab")
    build_wordpiece_vocab(["a red circle on the left", "two blue squares", "what shape is it"] * 20, 60, out)
    return out, len(init_tokenizer(out))


def _tiny(arch: str, vocab, **over):
    path, n = vocab
    torch.manual_seed(0)
    return lavislite.load_model(arch, "tiny", tokenizer=str(path), **{"model.med_overrides.vocab_size": n, **over})


@pytest.fixture(scope="module")
def caption_folder(vocab, tmp_path_factory):
    model = _tiny("blip_caption", vocab, image_size=48)
    return model, model.save_pretrained(tmp_path_factory.mktemp("cap") / "folder")


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("arch", ["blip_retrieval", "blip_vqa", "blip_nlvr"])
def test_round_trip_every_head(arch, vocab, tmp_path):
    model = _tiny(arch, vocab)
    out = lavislite.export_model(model, tmp_path / "m")
    assert {p.name for p in out.iterdir()} == {CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR}
    again = lavislite.load_model(out)
    assert type(again) is type(model) and _same_weights(model, again)
    assert again.tokenizer("a red circle").input_ids == model.tokenizer("a red circle").input_ids


def test_folder_loads_with_its_processors(caption_folder):
    model, folder = caption_folder
    again, vis, _ = lavislite.load_model_and_preprocess(str(folder))
    assert _same_weights(model, again) and not again.training
    assert vis["eval"].image_size == 48 and vis["train"].image_size == 48
    image = Image.new("RGB", (20, 30), (200, 10, 10))
    ids = lambda m: m.generate({"image": vis["eval"](image).unsqueeze(0)}, num_beams=1, max_length=20, min_length=14)  # noqa: E731
    assert ids(again) == ids(model.eval())


def test_overrides_apply_on_top_of_a_folder(caption_folder):
    _, folder = caption_folder
    assert lavislite.load_model(folder, max_txt_len=12).max_txt_len == 12
    with pytest.raises(ConfigError, match="unknown config key 'model.no_such_key'"):
        lavislite.load_model(folder, no_such_key=1)


def test_another_head_from_the_same_weights(vocab, tmp_path):
    retrieval = _tiny("blip_retrieval", vocab)
    folder = retrieval.save_pretrained(tmp_path / "r")
    itm = lavislite.load_model(folder, arch="blip_image_text_matching")
    assert type(itm).__name__ == "BlipITM"
    assert torch.equal(itm.itm_head.weight, retrieval.itm_head.weight)


def test_a_folder_is_a_checkpoint_source(caption_folder, vocab):
    model, folder = caption_folder
    path, n = vocab
    again = lavislite.load_model("blip_caption", "tiny", checkpoint=str(folder), tokenizer=str(path), image_size=48,
                                 **{"model.med_overrides.vocab_size": n})
    assert _same_weights(model, again)


@pytest.mark.parametrize("part, message", [
    (WEIGHTS_FILE, "model.safetensors is missing"),
    (TOKENIZER_DIR, "tokenizer/vocab.txt is missing"),
    (CONFIG_FILE, "lavislite_model.yaml is missing"),
])
def test_a_folder_missing_a_part_is_named(caption_folder, tmp_path, part, message):
    _, folder = caption_folder
    broken = Path(shutil.copytree(folder, tmp_path / "broken"))
    target = broken / part
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    if part == TOKENIZER_DIR:
        target.mkdir()  # an emptied tokenizer directory
    with pytest.raises(ConfigError, match=message) as err:
        lavislite.load_model(broken)
    assert str(broken) in str(err.value) and "\n" not in str(err.value)


def test_other_directories_are_not_model_folders(tmp_path):
    hf = tmp_path / "blip-hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="transformers BLIP directory: pass it as checkpoint="):
        lavislite.load_model(hf)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {}\n")
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(ConfigError, match="run directory without a model/ folder"):
        lavislite.load_model(run)
    with pytest.raises(ConfigError, match="needs a model type"):
        lavislite.load_model("blip_caption")
    with pytest.raises(ConfigError, match=r"load_model\('blip_caption', 'tiny'\)"):
        lavislite.load_model("blip_caption:tiny")
    with pytest.raises(ConfigError, match="neither a model folder"):
        lavislite.load_model(tmp_path / "nowhere")
    with pytest.raises(CheckpointError):  # the checkpoint loader still reads transformers directories only
        lavislite.load_model("blip_caption", "tiny", checkpoint=str(hf))


def test_save_refuses_a_foreign_directory(caption_folder, tmp_path):
    model, _ = caption_folder
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not a model folder"):
        model.save_pretrained(tmp_path)


def test_export_command(vocab, tmp_path, capsys):
    path, n = vocab
    torch.manual_seed(0)
    ckpt = tmp_path / "w.safetensors"
    from lavislite.common.checkpoint import save_checkpoint

    model = _tiny("blip_vqa", vocab)
    save_checkpoint(model, ckpt)
    out = tmp_path / "exported"
    assert main(["export", "--model", "blip_vqa:tiny", "--checkpoint", str(ckpt), "--tokenizer", str(path),
                 "--option", f"med_overrides.vocab_size={n}", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert _same_weights(model, lavislite.load_model(out))
    cfg = (out / CONFIG_FILE).read_text()
    assert "tokenizer: tokenizer" in cfg and str(ckpt) not in cfg  # the folder stands alone


def test_cli_names_a_path_that_is_not_a_folder(tmp_path, capsys):
    assert main(["caption", str(tmp_path), "--model", str(tmp_path)]) == 2
    assert "not a model folder" in capsys.readouterr().err


# -- item 3: one image size -----------------------------------------------------------------------
def test_image_size_reaches_the_processors(vocab):
    """Before: the tiny type's processors stayed at 32 px and a 64 px model got 32 px images."""
    path, n = vocab
    model, vis, _ = lavislite.load_model_and_preprocess("blip_caption", "tiny", tokenizer=str(path), image_size=64,
                                                        **{"model.med_overrides.vocab_size": n})
    image = Image.new("RGB", (50, 40))
    assert vis["eval"](image).shape[-1] == 64 and vis["train"](image).shape[-1] == 64
    assert model.visual_encoder.pos_embed.shape[1] == 1 + (64 // 8) ** 2


def test_a_contradicting_processor_size_is_refused(vocab):
    path, _ = vocab
    with pytest.raises(ConfigError, match=r"preprocess.vis_processor.eval.image_size=48 contradicts model.image_size=64"):
        lavislite.load_model_and_preprocess("blip_caption", "tiny", tokenizer=str(path), image_size=64,
                                            **{"preprocess.vis_processor.eval.image_size": 48})
    _, vis, _ = lavislite.load_model_and_preprocess("blip_caption", "tiny", tokenizer=str(path), image_size=64,
                                                    **{"preprocess.vis_processor.eval.image_size": 64})
    assert vis["eval"].image_size == 64


def test_a_run_whose_dataset_processor_contradicts_the_model_is_refused():
    from lavislite.common.config import build_run_config
    from lavislite.demo.run import PROJECT_DIR
    from lavislite.processors.sizes import check_run

    cfg = build_run_config(PROJECT_DIR / "caption.yaml", ["model.image_size=64"])
    with pytest.raises(ConfigError, match=r"datasets.coco_caption.vis_processor.train.image_size=32 contradicts model.image_size=64"):
        check_run(cfg)
    check_run(build_run_config(PROJECT_DIR / "caption.yaml", []))
    # evaluation only: the unused train processor does not matter
    check_run(build_run_config(PROJECT_DIR / "caption.yaml", ["model.image_size=64", "run.evaluate=true",
                                                               "datasets.coco_caption.vis_processor.eval.image_size=64"]))


def test_demo_prints_ready_commands():
    from lavislite.demo.run import ready_commands

    lines = ready_commands({"caption": "/r/cap", "vqa": "/r/vqa", "retrieval": "/r/ret", "pretrain": "/r/pre"}, Path("/w/images/a.jpg"))
    assert "lavislite caption /w/images/a.jpg --model /r/cap" in lines
    assert any(line.startswith("lavislite vqa /w/images/a.jpg") and line.endswith("--model /r/vqa") for line in lines)
    for cmd in ("retrieve", "match", "features"):
        assert any(line.startswith(f"lavislite {cmd} ") and line.endswith("--model /r/ret") for line in lines), cmd
    json.dumps(lines)


def test_a_plugin_model_folder_records_its_module(tmp_path):
    """A model class from the user's own module: the folder names the module, and loading imports it."""
    from lavislite.common.registry import registry

    registry.import_modules(["tests.foundation.plugin_pkg.my_plugins"])
    torch.manual_seed(0)
    model = lavislite.load_model("test_tiny_linear", "default", hidden=3)
    folder = lavislite.export_model(model, tmp_path / "plugin")
    assert "tests.foundation.plugin_pkg.my_plugins" in (folder / CONFIG_FILE).read_text()
    assert not (folder / TOKENIZER_DIR).exists()  # the plugin model has no tokenizer
    again = lavislite.load_model(folder)
    assert again.linear.in_features == 3 and _same_weights(model, again)
