"""Video datasets: video-text pairs (retrieval, training) and video question answering.

A record names its video by ``"video"`` (a path relative to the video root, with extension, as in
lavislite's video-QA files) or by ``"clip_name"`` (BLIP's ``msrvtt_test.jsonl``: the file is
``<video root>/<clip_name><video_ext>``, ``video_ext`` defaulting to ``.mp4``). Optional
``"start_time"`` / ``"end_time"`` (seconds) restrict the frames to a window of the file.

Frames are decoded in ``__getitem__`` by the video processor (``blip_video_eval`` /
``blip_video_train``), so DataLoader workers do the decoding. A missing, empty or corrupt video raises
DataError naming the file and the annotation record; with ``skip_bad_samples`` it is skipped and
counted instead (see :class:`~lavislite.datasets.datasets.base_dataset.BaseDataset`): the evaluation
tasks then leave that video (and its captions / questions) out and report how many they left out.

* :class:`VideoTextTrainDataset`: one sample per (video, caption): ``video``, ``text_input``,
  ``video_id`` (contiguous int per distinct video, a long tensor after collation), ``instance_id``.
* :class:`VideoRetrievalEvalDataset`: one sample per video: ``video``, ``video_id`` (clip name),
  ``index``, ``instance_id``; exposes ``text`` (cleaned captions), ``vid2txt`` and ``txt2vid`` (BLIP's
  layout; ``img2txt``/``txt2img`` are aliases, so image retrieval code reads it too).
* :class:`VideoQADataset`: one sample per question: ``video``, ``text_input``, ``question_id``,
  ``instance_id``, ``answers``; exposes ``answer_list`` and ``gt_answers``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from lavislite.common.errors import DataError
from lavislite.datasets.annotations import Field
from lavislite.datasets.datasets.base_dataset import BaseDataset, collate_dicts
from lavislite.datasets.datasets.caption_datasets import RetrievalIndex, captions_of
from lavislite.datasets.datasets.vqa_datasets import answers_of

VIDEO_FIELDS = (
    Field("video", "str", required=False),
    Field("clip_name", "str", required=False),
    Field("start_time", "any", required=False),
    Field("end_time", "any", required=False),
)
DEFAULT_VIDEO_EXT = ".mp4"


def check_video_record(record: dict) -> tuple[str, str] | None:
    """A record must name its video (``video`` or ``clip_name``); times, when given, are seconds."""
    if not record.get("video") and not record.get("clip_name"):
        return "video", "is missing (give 'video': a path relative to the video root, or 'clip_name')"
    for key in ("start_time", "end_time"):
        v = record.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            return key, f"must be a non-negative number of seconds, got {v!r:.60}"
    s, e = record.get("start_time"), record.get("end_time")
    if s is not None and e is not None and not s < e:
        return "end_time", f"must be greater than start_time ({s!r}), got {e!r}"
    return None


def video_rel_path(record: dict, video_ext: str = DEFAULT_VIDEO_EXT) -> str:
    """The video of ``record`` relative to the video root."""
    if record.get("video"):
        return str(record["video"])
    return f"{record['clip_name']}{video_ext}"


def video_key(record: dict) -> str:
    """A name for the record's video: the clip name, else the video path without its extension."""
    if record.get("clip_name"):
        return str(record["clip_name"])
    return str(Path(str(record["video"])).with_suffix(""))


class VideoDatasetBase(BaseDataset):
    """Shared by the video datasets: where a record's video is and how it becomes frames."""

    def __init__(self, *args: Any, video_ext: str = DEFAULT_VIDEO_EXT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.video_ext = video_ext if video_ext.startswith(".") or not video_ext else f".{video_ext}"

    @classmethod
    def check_record(cls, record: dict) -> tuple[str, str] | None:
        return check_video_record(record)

    def video_path(self, record: dict) -> Path:
        return self.media_path(video_rel_path(record, self.video_ext))

    def load_video(self, record: dict) -> Any:
        """The processed frames of ``record``'s video (the processor reads the file: DataError if bad)."""
        path = self.video_path(record)
        start, end = record.get("start_time"), record.get("end_time")
        if start is None and end is None:
            return self.vis_processor(path)
        return self.vis_processor(path, start_time=start, end_time=end)


class VideoTextTrainDataset(VideoDatasetBase):
    """One sample per (video, caption); ``video_id`` is a contiguous int per distinct video."""

    FIELDS = VIDEO_FIELDS + (Field("caption", "str_or_str_list"),)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.items: list[tuple[int, int]] = []
        ids: dict[str, int] = {}
        self._video_ids: list[int] = []
        for r, rec in enumerate(self.annotation):
            self._video_ids.append(ids.setdefault(video_rel_path(rec, self.video_ext), len(ids)))
            self.items.extend((r, c) for c in range(len(captions_of(rec))))

    def __len__(self) -> int:
        return len(self.items)

    def record_of(self, index: int) -> int:
        return self.items[index][0]

    def get_sample(self, index: int) -> dict[str, Any]:
        r, c = self.items[index]
        rec = self.annotation[r]
        return {
            "video": self.load_video(rec),
            "text_input": self.text_processor(captions_of(rec)[c]),
            "video_id": self._video_ids[r],
            "instance_id": str(index),
        }

    def collater(self, samples: Sequence[dict]) -> dict[str, Any]:
        return collate_dicts(samples, long_keys=("video_id",))


class VideoRetrievalEvalDataset(RetrievalIndex, VideoDatasetBase):
    """One sample per video; ``text`` / ``vid2txt`` / ``txt2vid`` for text-video retrieval.

    MSR-VTT 1k-A has one caption per video, so ``vid2txt[i] == [i]`` and ``txt2vid[t] == t``; records with
    several captions (``"caption": [...]``) work the same way as COCO's five.
    """

    FIELDS = VIDEO_FIELDS + (Field("caption", "str_or_str_list"),)

    def get_sample(self, index: int) -> dict[str, Any]:
        rec = self.annotation[index]
        return {"video": self.load_video(rec), "video_id": video_key(rec), "index": index, "instance_id": str(index)}

    def collater(self, samples: Sequence[dict]) -> dict[str, Any]:
        return collate_dicts(samples, long_keys=("index",))

    @property
    def vid2txt(self) -> list[list[int]]:
        """For each video (sample index), the indices into ``text`` of its captions."""
        return self.img2txt

    @property
    def txt2vid(self) -> list[int]:
        """For each entry of ``text``, the index of its video."""
        return self.txt2img

    @property
    def video_ids(self) -> list[str]:
        return [video_key(r) for r in self.annotation]


class VideoQADataset(VideoDatasetBase):
    """Questions about videos: lavislite's video-QA format (docs/video.md), one sample per question."""

    FIELDS = VIDEO_FIELDS + (
        Field("question_id", "str_or_int"),
        Field("question", "str"),
        Field("answer", "str_or_str_list", required=False),
    )

    def __init__(self, *args: Any, answer_list: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer_list = list(answer_list) if answer_list is not None else None
        seen: dict[Any, int] = {}
        for i, rec in enumerate(self.annotation):
            qid = rec["question_id"]
            if qid in seen:
                raise DataError(
                    f"{self.table.where(i)}: field 'question_id' {qid!r} repeats record {self.table.origins[seen[qid]][1]}; "
                    f"question ids must be unique in a split"
                )
            seen[qid] = i
        self.gt_answers = {rec["question_id"]: answers_of(rec, "answer") for rec in self.annotation if rec.get("answer")}

    def get_sample(self, index: int) -> dict[str, Any]:
        rec = self.annotation[index]
        return {
            "video": self.load_video(rec),
            "text_input": self.text_processor(rec["question"]),
            "question_id": rec["question_id"],
            "instance_id": str(rec["question_id"]),
            "answers": answers_of(rec, "answer"),
        }
