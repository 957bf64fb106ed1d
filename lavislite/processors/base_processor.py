"""The base class of every processor: a callable built from a config section."""

from __future__ import annotations

from typing import Any


class BaseProcessor:
    """Turns one raw input (a PIL image, a caption, a video path) into what a model eats.

    ``from_config(cfg)`` builds it from a config section such as ``{name: blip_image_eval,
    image_size: 384}``; unknown keys in that section are an error naming the key.
    """

    def __call__(self, item: Any) -> Any:
        return item

    @classmethod
    def from_config(cls, cfg: Any = None) -> "BaseProcessor":
        from lavislite.common.config import to_kwargs

        return cls(**to_kwargs(cfg, cls))
