"""Bad configs and calls fail fast with a clear lavislite error, before weights are built or fetched."""

from __future__ import annotations

import time

import pytest
import torch

from lavislite.api import load_model
from lavislite.common.config import build_run_config
from lavislite.common.errors import ConfigError, DataError, RegistryError
from lavislite.common.registry import registry
from lavislite.datasets.datasets.base_dataset import collate_dicts
from lavislite.models.tokenizer import build_wordpiece_vocab
from lavislite.tasks.retrieval import clamp_k


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab")
    build_wordpiece_vocab(["a cat on a mat what is it yes no red dog"] * 20, 60, out)
    return str(out)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("LAVISLITE_OFFLINE", "1")  # any attempt to fetch weights would fail loudly


def test_unknown_model_name_and_type_suggest_the_right_one():
    with pytest.raises(RegistryError, match=r"no entry 'blip_captoin'.*Did you mean 'blip_caption'"):
        registry.get_model_class("blip_captoin")
    with pytest.raises(ConfigError, match=r"no model type 'base_cocoo'.*Did you mean 'base_coco'"):
        load_model("blip_caption", "base_cocoo")


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"imag_size": 384}, r"unknown config key 'model\.imag_size'.*Did you mean 'model\.image_size'"),
        ({"image_size": "384"}, r"'model\.image_size' .* must be int"),
        ({"image_size": 390}, r"image_size=390 is not divisible by the ViT patch size 16"),
    ],
)
def test_bad_model_overrides_fail_before_weights(overrides, match):
    with pytest.raises(ConfigError, match=match):  # first call: module imports (not model work) happen here
        load_model("blip_vqa", "vqav2", **overrides)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=match):
        load_model("blip_vqa", "vqav2", **overrides)  # a full-size model: building it would take seconds
    assert time.monotonic() - t0 < 2.0


def test_bad_run_configs(tmp_path):
    def project(text: str):
        p = tmp_path / "p.yaml"
        p.write_text(text)
        return p

    with pytest.raises(ConfigError, match=r"unknown top-level section 'trian'"):
        build_run_config(project("trian: {}\n"))
    with pytest.raises(ConfigError, match=r"model\.model_type is required"):
        build_run_config(project("model: {arch: blip_caption}\n"))
    with pytest.raises(ConfigError, match=r"unknown config key 'run\.max_epochs'"):
        build_run_config(project("run: {max_epochs: 3}\n"))
    with pytest.raises(ConfigError, match=r"'run\.max_epoch' in --options must be int"):
        build_run_config(project("run: {}\n"), ["run.max_epoch=ten"])


def test_k_larger_than_the_candidates_is_clamped_and_k_below_1_refused(caplog):
    with caplog.at_level("WARNING"):
        assert clamp_k(500, 10, "i2t") == 10
    assert "exceeds the 10 candidates" in caplog.text
    with pytest.raises(ConfigError, match="k_test=0"):
        clamp_k(0, 10, "i2t")


def test_empty_batches_are_data_errors(vocab):
    with pytest.raises(DataError, match="empty batch"):
        collate_dicts([])
    r = load_model("blip_retrieval", "tiny", tokenizer=vocab)
    with pytest.raises(DataError, match="no texts"):
        r.encode_text([])


def test_vqa_candidate_count_and_answer_list_checked(vocab, caplog):
    v = load_model("blip_vqa", "tiny", tokenizer=vocab).eval()
    s = {"image": torch.zeros(1, 3, 32, 32), "text_input": ["what is it"]}
    with caplog.at_level("WARNING"):
        assert len(v.predict_answers(s, inference_method="rank", answer_list=["yes", "no"], num_ans_candidates=5)) == 1
    assert "ranking all 2" in caplog.text
    with pytest.raises(ConfigError, match="num_ans_candidates=0"):
        v.predict_answers(s, inference_method="rank", answer_list=["yes", "no"], num_ans_candidates=0)
    with pytest.raises(ConfigError, match="answer_list must be a non-empty list"):
        v.predict_answers(s, inference_method="rank", answer_list=[])
    with pytest.raises(DataError, match="1 questions for 2 images"):
        v.predict_answers({"image": torch.zeros(2, 3, 32, 32), "text_input": ["a"]}, inference_method="generate")


def test_caption_generate_on_an_empty_batch(vocab):
    m = load_model("blip_caption", "tiny", tokenizer=vocab).eval()
    with pytest.raises(DataError):
        m.generate({"image": torch.zeros(0, 3, 32, 32)})


def test_vqa_predict_on_an_empty_batch(vocab):
    v = load_model("blip_vqa", "tiny", tokenizer=vocab).eval()
    with pytest.raises(DataError):
        v.predict_answers({"image": torch.zeros(0, 3, 32, 32), "text_input": []}, inference_method="generate")


def test_image_of_the_wrong_size_is_a_clear_error(vocab):
    m = load_model("blip_caption", "tiny", tokenizer=vocab).eval()
    with pytest.raises((DataError, ConfigError), match="image_size"):
        m.generate({"image": torch.zeros(1, 3, 48, 48)})
