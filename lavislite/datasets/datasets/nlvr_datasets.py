"""NLVR2: two images, a sentence, a True/False label (BLIP's ``nlvr_{train,dev,test}.json``).

Record ``{"images": [p0, p1], "sentence", "label": "True" | "False"}``; sample ``{"image0", "image1",
"text_input" (pre_caption 40 via the text processor), "label" (1 = True), "instance_id"}``.

BLIP's ``nlvr_dataset`` swaps the image order with probability 0.5 at train AND test time; when it does
and the sentence contains the word "left" or "right", those words are swapped too so the label stays
right. Here the training coin comes from torch's RNG (seeded per DataLoader worker by the runner); at
evaluation the coin is a deterministic function of ``(eval_seed, index)``, so every run, rank and worker
sees the same pairs (BLIP's test-time coin was unseeded). ``swap=False`` turns the swap off.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import torch

from lavislite.datasets.annotations import Field
from lavislite.datasets.datasets.base_dataset import BaseDataset, collate_dicts

_LR = {"left": "right", "right": "left"}


def swap_left_right(sentence: str) -> str:
    """Swap the whole words "left" and "right" (BLIP's word-level swap on the cleaned sentence)."""
    return " ".join(_LR.get(w, w) for w in sentence.split(" "))


class NLVRDataset(BaseDataset):
    """One sample per record; the pair order is swapped at random (see the module docstring)."""

    FIELDS = (Field("images", "pair"), Field("sentence", "str"), Field("label", "label"))

    def __init__(self, *args: Any, train: bool = False, swap: bool = True, eval_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train, self.swap, self.eval_seed = train, swap, int(eval_seed)

    def _coin(self, index: int) -> bool:
        if not self.swap:
            return False
        if self.train:
            return bool(torch.rand(()) < 0.5)
        return random.Random(self.eval_seed * 1_000_003 + index).random() < 0.5

    def get_sample(self, index: int) -> dict[str, Any]:
        rec = self.annotation[index]
        image0 = self.process_image(rec["images"][0])
        image1 = self.process_image(rec["images"][1])
        sentence = self.text_processor(rec["sentence"])
        label = rec["label"] if isinstance(rec["label"], bool) else rec["label"] == "True"
        if self._coin(index):
            image0, image1 = image1, image0
            words = sentence.split(" ")
            if "left" in words or "right" in words:
                sentence = swap_left_right(sentence)
        return {"image0": image0, "image1": image1, "text_input": sentence, "label": int(label), "instance_id": str(index)}

    def collater(self, samples: Sequence[dict]) -> dict[str, Any]:
        return collate_dicts(samples, long_keys=("label",))
