"""``lavislite.evaluate``: one call gives the metrics (and score matrices) a project run reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lavislite
from lavislite.common.config import build_run_config
from lavislite.common.errors import ConfigError
from lavislite.models.tokenizer import init_tokenizer
from lavislite.tasks import setup_task
from lavislite.train import run
from tests.helpers.tasks import tokenizer_dir, write_karpathy

EVAL_PROC = {"name": "blip_image_eval", "image_size": 32}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaluate_api")
    vocab = tokenizer_dir(root / "vocab")
    paths = write_karpathy(root / "coco")
    cfg = {
        "model": {"arch": "blip_retrieval", "model_type": "tiny", "tokenizer": str(vocab), "queue_size": 8,
                  "med_overrides": {"vocab_size": len(init_tokenizer(vocab))}},
        "datasets": {"coco_retrieval": {"build_info": {"annotations": {"train": {"url": None}, "val": {"url": None},
                                                                       "test": {"url": None, "path": str(paths["test"])}},
                                                       "images": {"storage": str(root / "coco")}},
                                        "vis_processor": {"eval": EVAL_PROC}}},
        "run": {"task": "retrieval", "k_test": 3, "tie_rule": "blip", "save_scores": True, "test_splits": ["test"], "device": "cpu",
                "output_dir": str(root / "out"), "batch_size_eval": 4, "num_workers": 0, "min_free_space_mb": 1, "seed": 0},
    }
    path = root / "project.yaml"
    path.write_text(json.dumps(cfg))
    return path


def _model(project: Path):
    cfg = build_run_config(project, [])
    torch.manual_seed(0)
    return setup_task(cfg).build_model(cfg).eval()


def test_one_call_gives_the_runners_metrics_and_scores(project):
    summary = run(str(project), evaluate=True)
    expected = json.loads((Path(summary["run_dir"]) / "test_metrics.json").read_text())["metrics"]
    saved = np.load(Path(summary["run_dir"]) / "test_scores.npz")
    ann = json.loads(project.read_text())["datasets"]["coco_retrieval"]

    model = _model(project)  # the runner's model: same seed, same random weights
    metrics = lavislite.evaluate(model, "coco_retrieval", task="retrieval", data_options=ann, k_test=3, tie_rule="blip")
    assert metrics == pytest.approx(expected)
    metrics, scores = lavislite.evaluate(model, project, scores=True)  # the project yaml: its data and run keys
    assert metrics == pytest.approx(expected)
    np.testing.assert_allclose(scores["i2t"].numpy(), saved["i2t"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores["t2i"].numpy(), saved["t2i"], rtol=1e-5, atol=1e-5)


def lavislite_config(section: dict):
    from omegaconf import OmegaConf

    from lavislite.common.registry import registry

    return OmegaConf.merge(registry.get_builder_class("coco_retrieval").default_config(), section)


def test_dataset_and_processor_inputs(project):
    from lavislite.common.registry import registry
    from lavislite.processors.image_processors import BlipImageEvalProcessor

    ann = json.loads(project.read_text())["datasets"]["coco_retrieval"]
    builder_cls = registry.get_builder_class("coco_retrieval")
    model = _model(project)
    by_name = lavislite.evaluate(model, "coco_retrieval", task="retrieval", data_options=ann, k_test=3)
    config = builder_cls.default_config()
    config.build_info = ann["build_info"]  # with the builder's default 384 px processor, replaced here
    builder = builder_cls(config)
    by_builder = lavislite.evaluate(model, builder, task="retrieval", vis_processor=BlipImageEvalProcessor(image_size=32), k_test=3)
    assert by_builder == by_name
    splits = builder_cls(lavislite_config(ann)).build_datasets()  # what a builder returns: {split: Dataset}
    assert lavislite.evaluate(model, splits, task="retrieval", k_test=3) == by_name
    assert lavislite.evaluate(model, splits["test"], task="retrieval", k_test=3) == by_name
    with pytest.raises(ConfigError, match="a built Dataset keeps its own"):
        lavislite.evaluate(model, splits["test"], task="retrieval", vis_processor=BlipImageEvalProcessor(image_size=32))
    with pytest.raises(ConfigError, match=r"unknown run key\(s\) \['k_tset'\]"):
        lavislite.evaluate(model, "coco_retrieval", task="retrieval", data_options=ann, k_tset=3)

    class CountBatches:
        """A task object of one's own: one result per batch."""

        def evaluation(self, model, loader, split):
            return [{"instance_id": i} for i, _ in enumerate(loader)]

        def after_evaluation(self, results, split, output_dir, epoch):
            return {"batches": len(results)}

    assert lavislite.evaluate(model, splits["test"], task=CountBatches(), batch_size=3) == {"batches": 2}  # 4 images
    with pytest.raises(ConfigError, match="keeps no score matrices"):
        lavislite.evaluate(model, splits["test"], task=CountBatches(), scores=True)
