"""Image-text datasets in the COCO Karpathy format, used for captioning and for retrieval.

* Train records ``{"image", "caption": str | [str, ...], "image_id"?}``: one sample per caption,
  ``{"image", "text_input", "image_id", "instance_id"}``. ``image_id`` is a contiguous int per distinct
  image (record ``image_id``, else the image path), as BLIP's ``coco_karpathy_train``/``re_train_dataset``.
* Eval records ``{"image", "caption": [str, ...]}``: one sample per image, ``{"image", "image_id",
  "instance_id", "index"}``. The same object serves both eval tasks: captioning reads ``gt_file`` (COCO
  format ground truth), retrieval reads ``text`` / ``img2txt`` / ``txt2img`` (BLIP's layout, built
  lazily with the eval text processor).
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from lavislite.common.errors import DataError
from lavislite.datasets.annotations import Field
from lavislite.datasets.datasets.base_dataset import BaseDataset, collate_dicts

logger = logging.getLogger(__name__)

TRAIN_FIELDS = (Field("image", "str"), Field("caption", "str_or_str_list"), Field("image_id", "str_or_int", required=False))
EVAL_FIELDS = (Field("image", "str"), Field("caption", "str_or_str_list"), Field("image_id", "str_or_int", required=False))
NOCAPS_FIELDS = (Field("image", "str"), Field("img_id", "str_or_int"))


def captions_of(record: dict) -> list[str]:
    cap = record["caption"]
    return [cap] if isinstance(cap, str) else list(cap)


class RetrievalIndex:
    """BLIP's re_eval layout of an image or video eval dataset (``annotation``, ``text_processor``, ``where``):
    every caption cleaned by the eval text processor in record order, each item's caption indices and each
    caption's item. A record without captions, or a caption the processor rejects, is a DataError naming it."""

    @cached_property
    def _retrieval_index(self) -> tuple[list[str], list[list[int]], list[int]]:
        text: list[str] = []
        item2txt: list[list[int]] = []
        txt2item: list[int] = []
        for i, rec in enumerate(self.annotation):
            if "caption" not in rec:
                raise DataError(f"{self.where(i)}: field 'caption' is missing; retrieval evaluation needs the captions of every item")
            item2txt.append([])
            for cap in captions_of(rec):
                try:
                    text.append(self.text_processor(cap))
                except DataError as exc:
                    raise DataError(f"{self.where(i)}: field 'caption': {exc}") from exc
                item2txt[-1].append(len(txt2item))
                txt2item.append(i)
        return text, item2txt, txt2item

    @property
    def text(self) -> list[str]:
        """Every caption, cleaned by the eval text processor, in record order."""
        return self._retrieval_index[0]

    @property
    def img2txt(self) -> list[list[int]]:
        """For each item (sample index), the indices into ``text`` of its captions."""
        return self._retrieval_index[1]

    @property
    def txt2img(self) -> list[int]:
        """For each entry of ``text``, the index of its item."""
        return self._retrieval_index[2]


def coco_image_id(image: str) -> int:
    """BLIP's eval image id: the int after the last ``_`` of the file stem (``COCO_val2014_000000391895``)."""
    return int(Path(image).stem.split("_")[-1])


def _as_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def eval_image_ids(records: Sequence[dict], source: str) -> list[int]:
    """One unique int id per record: the records' ``image_id``, else BLIP's file-stem id, else the position.

    The first rule that gives every record a unique int wins (ids never mix rules).
    """
    ids = [_as_int(r.get("image_id")) for r in records]
    if records and all(i is not None for i in ids) and len(set(ids)) == len(ids):
        return ids  # type: ignore[return-value]
    try:
        ids = [coco_image_id(r["image"]) for r in records]
        if len(set(ids)) == len(ids):
            return ids
    except ValueError:
        pass
    if records:
        logger.warning(
            "%s: image ids are not unique ints (neither 'image_id' nor the file stems); using record positions 0..%d", source, len(records) - 1
        )
    return list(range(len(records)))


def write_coco_gt(path: Path, image_ids: Sequence[int], captions: Sequence[Sequence[str]]) -> Path:
    """Write a COCO-format caption ground truth (what pycocoevalcap reads) atomically."""
    from lavislite.common.utils import atomic_write

    images = [{"id": int(i)} for i in image_ids]
    anns = []
    for image_id, caps in zip(image_ids, captions):
        for c in caps:
            anns.append({"image_id": int(image_id), "caption": c, "id": len(anns)})
    data = {"info": {}, "licenses": [], "images": images, "annotations": anns}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


class ImageTextTrainDataset(BaseDataset):
    """One sample per (image, caption) pair; ``image_id`` = contiguous int per distinct image."""

    FIELDS = TRAIN_FIELDS
    image_id_as_tensor = False  # retrieval training wants a long tensor (idx-aware ITC)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.items: list[tuple[int, int]] = []
        self.img_ids: dict[Any, int] = {}
        self._record_image_id: list[int] = []
        for r, rec in enumerate(self.annotation):
            key = rec.get("image_id", rec["image"])
            self._record_image_id.append(self.img_ids.setdefault(key, len(self.img_ids)))
            self.items.extend((r, c) for c in range(len(captions_of(rec))))

    def __len__(self) -> int:
        return len(self.items)

    def record_of(self, index: int) -> int:
        return self.items[index][0]

    def get_sample(self, index: int) -> dict[str, Any]:
        r, c = self.items[index]
        rec = self.annotation[r]
        return {
            "image": self.process_image(rec["image"]),
            "text_input": self.text_processor(captions_of(rec)[c]),
            "image_id": self._record_image_id[r],
            "instance_id": str(index),
        }

    def collater(self, samples: Sequence[dict]) -> dict[str, Any]:
        return collate_dicts(samples, long_keys=("image_id",) if self.image_id_as_tensor else ())


class ImageTextEvalDataset(RetrievalIndex, BaseDataset):
    """One sample per image; exposes ``gt_file`` (captioning) and ``text``/``img2txt``/``txt2img`` (retrieval)."""

    FIELDS = EVAL_FIELDS

    def __init__(self, *args: Any, gt_file: str | Path | None = None, gt_dir: str | Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gt_file = Path(gt_file) if gt_file is not None else None
        self._gt_dir = Path(gt_dir) if gt_dir is not None else None
        self.image_ids = self._image_ids()

    def _image_ids(self) -> list[int]:
        return eval_image_ids(self.annotation, ", ".join(map(str, self.table.files)))

    def get_sample(self, index: int) -> dict[str, Any]:
        rec = self.annotation[index]
        return {
            "image": self.process_image(rec["image"]),
            "image_id": self.image_ids[index],
            "instance_id": str(index),
            "index": index,
        }

    # -- captioning ----------------------------------------------------------------------------
    @property
    def gt_file(self) -> Path | None:
        """COCO-format ground-truth json: the configured ``<split>_gt`` file, else one generated from the
        records' captions into the cache (written once, named by a hash of its content)."""
        if self._gt_file is not None:
            return self._gt_file
        if not all("caption" in r for r in self.annotation):
            return None
        caps = [captions_of(r) for r in self.annotation]
        payload = json.dumps([self.image_ids, caps], ensure_ascii=False).encode("utf-8")
        digest = hashlib.sha1(payload).hexdigest()[:12]
        stem = self.table.files[0].stem if self.table.files else "annotations"
        gt_dir = self._gt_dir if self._gt_dir is not None else (self.table.files[0].parent if self.table.files else Path("."))
        path = gt_dir / f"{stem}_gt_{digest}.json"
        if not path.is_file():
            write_coco_gt(path, self.image_ids, caps)
            logger.info("wrote the caption ground truth %s", path)
        self._gt_file = path
        return path

    def collater(self, samples: Sequence[dict]) -> dict[str, Any]:
        return collate_dicts(samples, long_keys=("index",))


class NoCapsEvalDataset(ImageTextEvalDataset):
    """NoCaps val/test (BLIP's ``nocaps_{val,test}.json``: ``{"image", "img_id"}``); ids for the server format."""

    FIELDS = NOCAPS_FIELDS

    @classmethod
    def check_record(cls, record: dict) -> tuple[str, str] | None:
        if _as_int(record["img_id"]) is None:
            return "img_id", f"must be an int (or a string of digits), got {record['img_id']!r:.60}"
        return None

    def _image_ids(self) -> list[int]:
        return [int(_as_int(rec["img_id"])) for rec in self.annotation]  # type: ignore[arg-type]
