"""Processors: turn raw images, texts and videos into model inputs.

Importing this package registers every built-in processor (the registry imports it lazily on the first
``registry.get_processor_class`` miss):

- ``blip_image_eval`` / ``blip_image_train``: PIL image or path -> float tensor (3, S, S)
- ``blip_caption`` / ``blip_question``: BLIP's text cleaning
- ``blip_video_eval`` / ``blip_video_train``: video path -> float tensor (T, 3, S, S)
"""

from __future__ import annotations

from typing import Any

from lavislite.common.registry import registry
from lavislite.processors.base_processor import BaseProcessor
from lavislite.processors.frame_sampling import sample_frame_indices
from lavislite.processors.image_processors import (
    BlipImageEvalProcessor,
    BlipImageTrainProcessor,
    load_image,
    to_rgb,
)
from lavislite.processors.randaugment import RandomAugment
from lavislite.processors.text_processors import (
    BlipCaptionProcessor,
    BlipQuestionProcessor,
    pre_caption,
    pre_question,
)
from lavislite.processors.video_io import read_frames
from lavislite.processors.video_processors import BlipVideoEvalProcessor, BlipVideoTrainProcessor


def load_processor(name: str, cfg: Any = None) -> BaseProcessor:
    """Build the processor registered as ``name`` from a config section (or None for defaults)."""
    return registry.get_processor_class(name).from_config(cfg)


__all__ = [
    "BaseProcessor",
    "BlipCaptionProcessor",
    "BlipImageEvalProcessor",
    "BlipImageTrainProcessor",
    "BlipQuestionProcessor",
    "BlipVideoEvalProcessor",
    "BlipVideoTrainProcessor",
    "RandomAugment",
    "load_image",
    "load_processor",
    "pre_caption",
    "pre_question",
    "read_frames",
    "sample_frame_indices",
    "to_rgb",
]
