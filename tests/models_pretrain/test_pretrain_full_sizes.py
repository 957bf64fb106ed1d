"""Every blip_pretrain / blip_retrieval model type builds; full sizes (slow) check key and parameter counts."""

import pytest
import torch

from lavislite.common.config import model_type_config
from lavislite.common.registry import registry

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread

# the original checkpoints' key counts include `*.embeddings.position_ids`, a non-persistent buffer here
OFFICIAL_KEYS = {("blip_retrieval", "coco"): 949 - 2, ("blip_retrieval", "flickr"): 949 - 2, ("blip_pretrain", "base"): 1272 - 3}


def _cfg(arch, model_type, **over):
    cls = registry.get_model_class(arch)
    return cls, model_type_config(cls, model_type, {"load_finetuned": False, "load_pretrained": False, **over})


@pytest.mark.parametrize("arch", ["blip_retrieval", "blip_pretrain"])
def test_every_type_has_a_yaml_listing_what_the_class_reads(arch):
    cls = registry.get_model_class(arch)
    for model_type in cls.model_types():
        _, cfg = _cfg(arch, model_type)
        assert cfg.model.arch == arch and cfg.model.model_type == model_type
        for key in (
            "checkpoint",
            "strict_load",
            "tokenizer",
            "med_config",
            "med_overrides",
            "vit_overrides",
            "queue_size",
            "momentum",
            "alpha",
            "temp",
        ):
            assert key in cfg.model, (model_type, key)
        assert cfg.preprocess.vis_processor.eval.image_size == cfg.model.image_size


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch,model_type",
    [("blip_retrieval", t) for t in ("coco", "flickr")] + [("blip_pretrain", t) for t in ("base", "base_14m", "base_129m", "capfilt_large", "large")],
)
def test_full_size_builds(arch, model_type):
    torch.set_num_threads(2)
    cls, cfg = _cfg(arch, model_type)
    model = cls.from_config(cfg.model)  # the tokenizer is lazy: building needs no vocab files
    sd = model.state_dict()
    if (arch, model_type) in OFFICIAL_KEYS:
        assert len(sd) == OFFICIAL_KEYS[arch, model_type]
    assert model.image_queue.shape == (256, 57600)
    assert sd["visual_encoder.pos_embed"].shape[1] == (cfg.model.image_size // 16) ** 2 + 1
    width = 1024 if model_type == "large" else 768
    assert sd["vision_proj.weight"].shape == (256, width)
    assert sd["text_encoder.encoder.layer.0.crossattention.self.key.weight"].shape == (768, width)
    assert sd["text_encoder.embeddings.word_embeddings.weight"].shape == (30524, 768)
    online = sum(p.numel() for n, p in model.named_parameters() if not n.split(".")[0].endswith("_m"))
    print(f"{arch}/{model_type}: {len(sd)} keys, {online / 1e6:.1f}M online params, {model.num_parameters() / 1e6:.1f}M with momentum copies")
