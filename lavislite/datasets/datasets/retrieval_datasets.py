"""Image-text retrieval datasets (COCO / Flickr30k Karpathy format), BLIP's layout.

Training: the caption training dataset with ``image_id`` collated as a long tensor (same id = same
image; the idx-aware ITC loss uses it). Evaluation: one sample per image (``image``, ``index``, ...)
plus ``text`` (``pre_caption(c, 30)`` via the eval text processor), ``img2txt`` (caption indices of
each image) and ``txt2img`` (image index of each caption).
"""

from __future__ import annotations

from lavislite.datasets.datasets.caption_datasets import ImageTextEvalDataset, ImageTextTrainDataset


class RetrievalTrainDataset(ImageTextTrainDataset):
    """``{"image", "text_input", "image_id" (long tensor after collation), "instance_id"}``."""

    image_id_as_tensor = True


class RetrievalEvalDataset(ImageTextEvalDataset):
    """Images to encode, plus ``text``, ``img2txt`` and ``txt2img`` for the retrieval task."""
