import torch

from lavislite.common.registry import registry
from lavislite.processors import load_processor

NAMES = ["blip_caption", "blip_image_eval", "blip_image_train", "blip_question", "blip_video_eval", "blip_video_train"]


def test_all_processors_registered_with_defaults():
    assert set(NAMES) <= set(registry.list_processors())
    defaults = {name: registry.get_processor_class(name).from_config(None) for name in NAMES}
    assert defaults["blip_image_eval"].image_size == 384
    assert defaults["blip_image_train"].image_size == 384
    assert defaults["blip_caption"].prompt == "" and defaults["blip_caption"].max_words == 50
    assert defaults["blip_question"].max_words == 50
    assert defaults["blip_video_eval"].num_frames == 8 and defaults["blip_video_eval"].strategy == "uniform"
    assert defaults["blip_video_train"].strategy == "rand"


def test_omegaconf_sections_accepted():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"name": "blip_image_eval", "image_size": 16, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    proc = load_processor("blip_image_eval", cfg)
    from PIL import Image

    out = proc(Image.new("RGB", (20, 10), (255, 0, 0)))
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
