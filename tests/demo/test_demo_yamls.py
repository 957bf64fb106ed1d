"""The demo's project yamls: they validate, share one model size (checkpoints pass between them), and
the config rules they rely on (a renamed processor drops the old one's options; processor options are
the processor's own) hold."""

from __future__ import annotations

import pytest
import yaml

from lavislite.common.config import build_run_config
from lavislite.common.errors import ConfigError
from lavislite.demo.run import PROJECT_DIR, STAGES

SHARED = ("image_size", "vit_overrides", "med_overrides")


def test_every_stage_has_a_yaml_that_validates():
    for stage in STAGES:
        cfg = build_run_config(PROJECT_DIR / stage.yaml)
        assert cfg.model.model_type == "tiny" and cfg.run.device == "auto", stage.name


def test_model_sizes_agree():
    blocks = {s.name: yaml.safe_load((PROJECT_DIR / s.yaml).read_text())["model"] for s in STAGES}
    ref = blocks["pretrain"]
    for name, model in blocks.items():
        for key in SHARED:
            a, b = dict(model[key]) if isinstance(model[key], dict) else model[key], ref[key]
            if key == "med_overrides":
                a = {k: v for k, v in a.items() if k != "merge_layer_start"}
            assert a == b, f"{name}: model.{key} {a} != pretrain's {b}"


def test_renamed_processor_drops_the_old_options():
    cfg = build_run_config(PROJECT_DIR / "caption.yaml")
    train = cfg.datasets.coco_caption.vis_processor.train
    assert train.name == "blip_image_eval" and "min_scale" not in train


def test_processor_options_are_checked_by_the_processor():
    ok = build_run_config(PROJECT_DIR / "caption.yaml", ["datasets.coco_caption.vis_processor.train.name=blip_image_train",
                                                          "datasets.coco_caption.vis_processor.train.horizontal_flip=false"])
    assert ok.datasets.coco_caption.vis_processor.train.horizontal_flip is False
    from lavislite.common.config import to_kwargs
    from lavislite.processors.image_processors import BlipImageEvalProcessor

    with pytest.raises(ConfigError, match="horizontal_flip"):
        to_kwargs({"name": "blip_image_eval", "horizontal_flip": False}, BlipImageEvalProcessor)


def test_flip_off_is_deterministic():
    import numpy as np
    import torch
    from PIL import Image

    from lavislite.processors.image_processors import BlipImageTrainProcessor

    img = Image.fromarray((np.arange(32 * 32 * 3) % 251).astype("uint8").reshape(32, 32, 3))
    p = BlipImageTrainProcessor(image_size=32, min_scale=1.0, max_scale=1.0, randaugment=False, horizontal_flip=False)
    torch.manual_seed(0)
    outs = [p(img) for _ in range(8)]
    assert all(torch.equal(outs[0], o) for o in outs)
