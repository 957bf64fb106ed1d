"""Batch inference over many inputs: discovery, a DataLoader runner, resumable outputs, torchrun sharding.

Modules (import the one you need; this package imports nothing heavy on its own):

- :mod:`lavislite.inference.inputs`: files, folders and webdataset shards -> :class:`~lavislite.inference.inputs.Item` lists
- :mod:`lavislite.inference.data`: datasets that never raise inside DataLoader workers, and their collate
- :mod:`lavislite.inference.jsonl`: the resumable, crash-safe JSONL writer
- :mod:`lavislite.inference.feature_shards`: feature arrays written as ``.safetensors`` / ``.npy`` shards (resumable)
- :mod:`lavislite.inference.rank_split`: torchrun rank shares, per-rank part files and their merge
- :mod:`lavislite.inference.batch_loop`: the batch loop (progress, skipped-item accounting)
- :mod:`lavislite.inference.options`: the command-line options every inference command shares
- :mod:`lavislite.inference.loading`: model loading with command-line-level error messages

See ``docs/inference.md``.
"""
