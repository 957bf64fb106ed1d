"""Evaluation metrics: COCO captions, VQA accuracy, retrieval recall, plain accuracy.

Pure functions on plain Python / numpy / torch inputs; no model code. pycocoevalcap (and Java) are only
imported when caption metrics are computed.
"""

from lavislite.metrics.caption import EvalToolError, coco_caption_scores, ptb_tokenize, spice_models_present
from lavislite.metrics.classification import accuracy
from lavislite.metrics.retrieval import i2t_t2i_recall, retrieval_ranks, video_text_recall
from lavislite.metrics.vqa import exact_match_accuracy, normalize_answer, vqa_accuracy, vqa_score

__all__ = [
    "EvalToolError",
    "accuracy",
    "coco_caption_scores",
    "exact_match_accuracy",
    "i2t_t2i_recall",
    "normalize_answer",
    "ptb_tokenize",
    "retrieval_ranks",
    "spice_models_present",
    "video_text_recall",
    "vqa_accuracy",
    "vqa_score",
]
