"""A user's own plugins, living outside the package: registered by importing this module."""

from pathlib import Path

import torch

from lavislite.common.registry import registry
from lavislite.models.base_model import BaseModel
from lavislite.processors.base_processor import BaseProcessor

HERE = Path(__file__).parent


@registry.register_model("test_tiny_linear")
class TinyLinear(BaseModel):
    PRETRAINED_MODEL_CONFIG_DICT = {"default": str(HERE / "tiny_model.yaml")}

    def __init__(self, hidden: int = 4, scale: float = 1.0, use_bias: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.linear = torch.nn.Linear(hidden, hidden, bias=use_bias)

    @classmethod
    def from_config(cls, cfg):
        model = cls(hidden=cfg.hidden, scale=cfg.scale, use_bias=cfg.use_bias)
        model.load_checkpoint_from_config(cfg)
        return model

    def forward(self, x):
        return self.linear(x) * self.scale


@registry.register_processor("test_scale")
class ScaleProcessor(BaseProcessor):
    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def __call__(self, item):
        return item * self.factor


@registry.register_processor("test_upper")
class UpperProcessor(BaseProcessor):
    def __call__(self, item):
        return item.upper()


@registry.register_task("test_echo_task")
class EchoTask:
    RUN_DEFAULTS = {"echo_times": 1, "echo_word": "hi"}


@registry.register_builder("test_numbers")
class NumbersBuilder:
    @classmethod
    def default_config_path(cls, dataset_type: str = "default") -> Path:
        return HERE / "tiny_dataset.yaml"


@registry.register_runner("test_noop_runner")
class NoopRunner:
    RUN_DEFAULTS = {"noop_level": 0}
