"""The two CapFilt models: a captioner (``blip_caption``'s image-grounded decoder) writes synthetic
captions; a filter (the ITM head of ``blip_image_text_matching``, ``blip_retrieval`` or
``blip_pretrain``) scores every web and synthetic text against its image.

They are loaded as two separate models even when they come from one pre-trained checkpoint: the
paper fine-tunes them separately, and sharing their parameters hurts (confirmation bias, BLIP Table 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lavislite.capfilt.config import CapFiltConfig, ModelSpec
from lavislite.common.errors import CheckpointError, ConfigError, DownloadError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class _Loaded:
    model: Any
    process: Any  # the model's eval image processor: PIL -> (3, H, W)
    text: Any  # the model's eval text processor
    device: torch.device
    dtype: torch.dtype


def _load(spec: ModelSpec, role: str, device: torch.device, dtype: str) -> _Loaded:
    from lavislite.api import load_model_and_preprocess

    overrides = dict(spec.options)
    if spec.tokenizer:
        overrides["tokenizer"] = spec.tokenizer
    try:
        model, vis, txt = load_model_and_preprocess(spec.name, spec.model_type, device=device, checkpoint=spec.checkpoint,
                                                    dtype=_DTYPES[dtype], **overrides)
    except (CheckpointError, DownloadError) as exc:
        raise type(exc)(f"capfilt {role} {_label(spec)}: {exc} Set {role}.checkpoint to a local file.") from exc
    return _Loaded(model, vis["eval"], txt["eval"], device, _DTYPES[dtype])


def _label(spec: ModelSpec) -> str:
    return spec.name if spec.model_type is None else f"{spec.name}:{spec.model_type}"


class Captioner:
    """``captions(images, generator) -> [[caption] * num_captions per image]``."""

    def __init__(self, cfg: CapFiltConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.loaded = _load(cfg.captioner, "captioner", device, cfg.dtype)
        if not hasattr(self.loaded.model, "generate_ids"):
            raise ConfigError(f"captioner.model {_label(cfg.captioner)} cannot caption; "
                              "use a blip_caption type, e.g. blip_caption:base_coco")

    @property
    def process(self) -> Any:
        return self.loaded.process

    def captions(self, images: Tensor, generator: torch.Generator | None) -> list[list[str]]:
        c, m = self.cfg, self.loaded.model
        nucleus = c.method == "nucleus"
        texts = m.generate(
            {"image": images.to(self.loaded.device, dtype=self.loaded.dtype)}, use_nucleus_sampling=nucleus,
            num_beams=c.num_beams, max_length=c.max_length, min_length=c.min_length, top_p=c.top_p,
            repetition_penalty=c.repetition_penalty, num_captions=c.num_captions, generator=generator if nucleus else None,
        )
        n = c.num_captions
        return [[t.strip() for t in texts[i * n : (i + 1) * n]] for i in range(images.shape[0])]


class Filter:
    """``scores(images, texts) -> ITM match probabilities``, ``texts[i]`` being the texts of image ``i``."""

    def __init__(self, cfg: CapFiltConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.loaded = _load(cfg.filter, "filter", device, cfg.dtype)
        m = self.loaded.model
        if not all(hasattr(m, a) for a in ("itm_hidden", "itm_head", "visual_encoder")):
            raise ConfigError(f"filter.model {_label(cfg.filter)} has no image-text matching head; "
                              "use blip_image_text_matching, blip_retrieval or blip_pretrain")

    @property
    def process(self) -> Any:
        return self.loaded.process

    @torch.inference_mode()
    def scores(self, images: Tensor, texts: Sequence[Sequence[str]]) -> list[list[float]]:
        m = self.loaded.model
        flat = [self.loaded.text(t) for group in texts for t in group]
        if not flat:
            return [[] for _ in texts]
        owner = torch.tensor([i for i, group in enumerate(texts) for _ in group], device=self.loaded.device)
        image_tokens = m.visual_encoder(images.to(self.loaded.device, dtype=self.loaded.dtype))
        ids, mask = m.tokenize(flat, padding="longest", max_length=self.cfg.max_text_length)
        hidden = m.itm_hidden(image_tokens.index_select(0, owner), ids, mask)
        prob = m.itm_head(hidden).float().softmax(dim=-1)[:, 1].tolist()
        out, k = [], 0
        for group in texts:
            out.append(prob[k : k + len(group)])
            k += len(group)
        return out
