"""The BLIP heads. Importing this package registers them (one import line per module that registers).

``base`` also registers BLIP's model parts (the ``blip_vit`` vision encoder, the ``bert_wordpiece``
tokenizer) and ``convert`` its transformers checkpoint converter.
"""

from lavislite.models.blip import (  # noqa: F401  (registration)
    base,
    caption,
    convert,
    feature_extractor,
    image_text_matching,
    nlvr,
    pretrain,
    retrieval,
    vqa,
)
