"""Video builders: ``msrvtt_retrieval``, ``msrvtt_qa``, ``msvd_qa`` and the generic ``video_text``.

Videos live under ``build_info.videos.storage``; a record's file is ``<storage>/<video>`` or
``<storage>/<clip_name><build_info.videos.ext>``. Annotation formats (docs/video.md):

* ``msrvtt_retrieval``: BLIP's ``msrvtt_test.jsonl`` (1k-A test split): one ``{"clip_name", "caption"}``
  per line, downloaded from BLIP's bucket when no local path is set.
* ``msrvtt_qa`` / ``msvd_qa``: a JSON list of ``{"question_id", "question", "answer", "video"}`` plus
  ``build_info.answer_list`` (a JSON list of candidate answers, for ``inference_method: rank``). BLIP
  released no video-QA files; docs/video.md shows how to convert the public MSRVTT-QA / MSVD-QA ones.
* ``video_text``: your own videos. Caption records (``{"video" | "clip_name", "caption": str | [str]}``)
  give a video-text training set for ``train*`` splits and a retrieval set for the others; question records
  (``{"question_id", "question", "answer"?, "video"}``) give a video-QA set. ``annotation_format: auto``
  tells them apart by the first record.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.datasets.annotations import AnnotationTable, read_records
from lavislite.datasets.builders.base_builder import BaseDatasetBuilder
from lavislite.datasets.datasets.video_datasets import (
    DEFAULT_VIDEO_EXT,
    VideoQADataset,
    VideoRetrievalEvalDataset,
    VideoTextTrainDataset,
)
from lavislite.datasets.datasets.vqa_datasets import collect_answers, load_answer_list

logger = logging.getLogger(__name__)

FORMATS = ("auto", "caption", "qa")


class VideoBuilder(BaseDatasetBuilder):
    """Shared by the video builders: media under ``build_info.videos``, the video file extension."""

    media_kind = "videos"

    def dataset_kwargs(self, split: str, table: AnnotationTable) -> dict[str, Any]:
        return {"video_ext": str(self._get("build_info.videos.ext", DEFAULT_VIDEO_EXT))}


class VideoQABuilder(VideoBuilder):
    """Video QA (evaluation only: BLIP transfers its VQA model zero-shot)."""

    eval_dataset_cls = VideoQADataset

    def answer_list(self, table: AnnotationTable) -> list[str] | None:
        if self.is_configured("answer_list"):
            return load_answer_list(self.resolve_files("answer_list")[0])
        return None

    def dataset_kwargs(self, split: str, table: AnnotationTable) -> dict[str, Any]:
        return {**super().dataset_kwargs(split, table), "answer_list": self.answer_list(table)}


@registry.register_builder("msrvtt_retrieval")
class MSRVTTRetrievalBuilder(VideoBuilder):
    name = "msrvtt_retrieval"
    data_dir = "msrvtt"
    train_dataset_cls = VideoTextTrainDataset
    eval_dataset_cls = VideoRetrievalEvalDataset
    DATASET_CONFIG_DICT = {"default": "datasets/msrvtt/retrieval.yaml"}


@registry.register_builder("msrvtt_qa")
class MSRVTTQABuilder(VideoQABuilder):
    name = "msrvtt_qa"
    data_dir = "msrvtt"
    DATASET_CONFIG_DICT = {"default": "datasets/msrvtt/qa.yaml"}


@registry.register_builder("msvd_qa")
class MSVDQABuilder(VideoQABuilder):
    name = "msvd_qa"
    data_dir = "msvd"
    DATASET_CONFIG_DICT = {"default": "datasets/msvd/qa.yaml"}


@registry.register_builder("video_text")
class VideoTextBuilder(VideoQABuilder):
    """Your own videos + a JSON (or JSON Lines) file of captions or questions per split."""

    name = "video_text"
    data_dir = "video_text"
    DATASET_CONFIG_DICT = {"default": "datasets/video/defaults.yaml"}

    def annotation_format(self, split: str, files: Sequence[Path]) -> str:
        fmt = str(self._get("annotation_format", "auto"))
        if fmt not in FORMATS:
            raise ConfigError(f"{self.label}.annotation_format={fmt!r}; choose one of {', '.join(FORMATS)}")
        if fmt != "auto":
            return fmt
        for path in files:
            records, _ = read_records(path)
            for rec in records:
                if isinstance(rec, dict) and "question" in rec:
                    return "qa"
                if isinstance(rec, dict) and "caption" in rec:
                    return "caption"
                raise DataError(
                    f"{path}: cannot tell the annotation format from the first record {rec!r:.80}: a caption record has "
                    f"'caption', a question record has 'question'. Fix the file or set {self.label}.annotation_format"
                )
        raise DataError(f"{self.label}: split {split!r} has no records in {', '.join(map(str, files))}")

    def build_split(self, split: str) -> Any:
        files = self.resolve_entry(split)
        fmt = self.annotation_format(split, files)
        if fmt == "qa":
            cls: type = VideoQADataset
        else:
            cls = VideoTextTrainDataset if self.is_train(split) else VideoRetrievalEvalDataset
        table = self.load_table(split, cls, files)
        if not table.records:
            raise DataError(f"{self.label}: split {split!r} has no usable records in {', '.join(map(str, files))}")
        vis, text = self.processors(split)
        kwargs = VideoBuilder.dataset_kwargs(self, split, table)
        if cls is VideoQADataset:
            # without a configured answer list, rank over the answers that occur in the split's own records
            kwargs["answer_list"] = self.answer_list(table)
            if kwargs["answer_list"] is None:
                kwargs["answer_list"] = collect_answers([table.records]) or None
                if kwargs["answer_list"]:
                    logger.info(
                        "%s: no build_info.answer_list; split %r ranks over the %d answers of its own records",
                        self.label,
                        split,
                        len(kwargs["answer_list"]),
                    )
        ds = cls(table, vis, text, self.media_root(files), skip_bad_samples=self.skip_bad_samples, **kwargs)
        ds.prepare_for_workers()
        return ds
