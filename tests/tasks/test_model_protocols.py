"""The task <-> model contracts (lavislite.models.protocols): every BLIP head satisfies the ones its tasks
need, and a model that lacks one fails when the task is started, naming the method and the model class."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry
from lavislite.models.protocols import (
    Captioner,
    FeatureExtractor,
    RetrievalModel,
    VQAModel,
    missing_methods,
    require,
)

HEADS = {
    "blip_caption": (Captioner,),
    "blip_vqa": (VQAModel,),
    "blip_image_text_matching": (RetrievalModel,),
    "blip_retrieval": (RetrievalModel,),
    "blip_pretrain": (RetrievalModel,),
    "blip_feature_extractor": (FeatureExtractor,),
}


@pytest.mark.parametrize("arch", sorted(HEADS))
def test_blip_heads_satisfy_their_contracts(arch):
    cls = registry.get_model_class(arch)
    assert missing_methods(cls, HEADS[arch]) == []
    for protocol in HEADS[arch]:
        require(cls, [protocol], by="this test")


def test_retrieval_heads_own_their_similarity(build_tiny):
    """BLIP: one vector per image, the cosine of the normalised projections, float32 (n_img, n_txt)."""
    model = build_tiny("blip_retrieval").eval()
    with torch.no_grad():
        _, image_feats = model.encode_image(torch.randn(3, 3, 32, 32))
        text_feats, _, _ = model.encode_text(["a red circle", "two small shapes"])
        sims = model.itc_similarity(image_feats, text_feats)
    ref = torch.nn.functional.normalize(image_feats, dim=-1) @ torch.nn.functional.normalize(text_feats, dim=-1).t()
    assert sims.shape == (3, 2) and sims.dtype == torch.float32
    torch.testing.assert_close(sims, ref)
    with pytest.raises(Exception, match="itc_similarity needs image_feats"):
        model.itc_similarity(image_feats, text_feats[:, :3])


class _NoItm:
    def encode_image(self, image): ...
    def encode_text(self, texts, max_length=35): ...
    def itc_similarity(self, image_feats, text_feats): ...


class _ShortGenerate:
    def generate(self, samples, num_beams=3, max_length=30, min_length=10): ...


@pytest.mark.parametrize("task_name, model, missing", [
    ("retrieval", _NoItm(), "RetrievalModel.itm_logits"),
    ("video_retrieval", _NoItm(), "RetrievalModel.itm_logits"),
    ("captioning", _ShortGenerate(), "Captioner.generate(use_nucleus_sampling, top_p, repetition_penalty, num_captions, generator)"),
    ("vqa", _ShortGenerate(), "VQAModel.predict_answers, VQAModel.visual_tokens"),
    ("video_qa", _ShortGenerate(), "VQAModel.predict_answers, VQAModel.visual_tokens"),
])
def test_task_refuses_a_model_without_its_contract(task_name, model, missing):
    task = registry.get_task_class(task_name)(OmegaConf.create({"run": {"task": task_name}}))
    with pytest.raises(ConfigError) as err:
        task.check_model(model)
    msg = str(err.value)
    assert f"task {task_name!r}" in msg and missing in msg and type(model).__name__ in msg


def test_runner_checks_the_model_before_reading_data(tmp_path):
    """The build-time check runs when the runner is made: no dataset is touched."""
    runner_cls = registry.get_runner_class("runner_base")
    cfg = OmegaConf.create({"run": {"task": "retrieval", "output_dir": str(tmp_path), "device": "cpu"}})
    task = registry.get_task_class("retrieval")(cfg)
    with pytest.raises(ConfigError, match=r"RetrievalModel\.itm_logits.*_NoItm"):
        runner_cls(cfg, task, _NoItm(), datasets={})
