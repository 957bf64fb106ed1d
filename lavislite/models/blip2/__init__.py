"""The BLIP-2 family: frozen image encoders (EVA-CLIP ViT-g, CLIP ViT-L), the Q-Former on MED, and its heads.

Importing this package registers the heads (one import line per module that registers).
"""

from lavislite.models.blip2 import stage1  # noqa: F401  (registration: blip2, blip2_feature_extractor, blip2_image_text_matching)
