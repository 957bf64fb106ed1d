"""Datasets: builders (config -> {split: Dataset}) and the Dataset classes. See docs/datasets.md."""
