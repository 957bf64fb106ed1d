"""Image-text pre-training (BLIP: ITC + ITM + LM in one ``model(samples)`` call).

Training only, by default. Listing a retrieval-style split in ``run.valid_splits`` (a dataset exposing
``text``/``img2txt``/``txt2img``, e.g. ``coco_retrieval``'s val) evaluates zero-shot retrieval with the
retrieval task's evaluation, unchanged; ``r_mean`` then selects the best checkpoint.
"""

from __future__ import annotations

from typing import ClassVar

from lavislite.common.registry import registry
from lavislite.tasks.retrieval import RetrievalTask


@registry.register_task("image_text_pretrain")
class ImageTextPretrainTask(RetrievalTask):
    """``model(samples)`` returns ``loss = loss_itc + loss_itm + loss_lm``; evaluation = zero-shot retrieval."""

    RUN_DEFAULTS: ClassVar[dict] = dict(RetrievalTask.RUN_DEFAULTS)
