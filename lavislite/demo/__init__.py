"""The offline demo's synthetic shapes world (see ``docs/formats.md``)."""

from lavislite.demo.world import WorldInfo, all_texts, generate_world, load_world

__all__ = ["WorldInfo", "all_texts", "generate_world", "load_world"]
