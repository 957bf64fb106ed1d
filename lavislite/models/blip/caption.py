"""BLIP image captioning (``blip_caption``; BLIP's ``BLIP_Decoder``).

* ``visual_encoder`` (ViT) -> image tokens; ``text_decoder`` (MED ``BertLMHeadModel``) cross-attends to them.
* Training (``model(samples)``): ``text_input`` already starts with the prompt ("a picture of ..."), is
  tokenized ``padding="longest"`` up to ``max_txt_len``, [DEC] replaces [CLS]; padding and the prompt's
  tokens are -100 in the targets; label-smoothed (0.1) LM loss averaged over the remaining tokens.
* Generation follows the original exactly: prompt ids = [DEC] + prompt without [SEP]; ``max_length`` and
  ``min_length`` count the prompt; HF-4.15 beam search / greedy; nucleus sampling = top-k 50 + top-p +
  repetition penalty 1.1 (hard-coded, as the original); decode with ``skip_special_tokens`` and cut the
  first ``len(prompt)`` characters. Unlike the original, image tokens are never repeated per beam: beams
  stay grouped per image, and the decoder's cache holds each image's cross-attention K/V once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.models.blip.base import BlipBase
from lavislite.models.generation import generate
from lavislite.models.med import BertLMHeadModel, MedConfig, MedKVCache
from lavislite.models.outputs import BlipOutput

# the original sampler: HF 4.15 falls back to config.top_k=50, and BLIP passes repetition_penalty=1.1
NUCLEUS_TOP_K = 50
NUCLEUS_REPETITION_PENALTY = 1.1


@registry.register_model("blip_caption")
class BlipCaption(BlipBase):
    """BLIP captioner: ``generate(samples) -> list[str]``; ``model(samples) -> BlipOutput(loss, loss_lm)``."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "base_coco": "models/blip/blip_caption_base_coco.yaml",
        "large_coco": "models/blip/blip_caption_large_coco.yaml",
        "tiny": "models/blip/blip_caption_tiny.yaml",
    }

    def __init__(
        self,
        visual_encoder: torch.nn.Module,
        vision_width: int,
        med_config: MedConfig,
        tokenizer: Any = "bert-base-uncased",
        prompt: str = "a picture of ",
        max_txt_len: int = 40,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__(tokenizer)
        self.visual_encoder = visual_encoder
        self.text_decoder = BertLMHeadModel(med_config.replace(encoder_width=vision_width))
        self.prompt = str(prompt or "")
        self.max_txt_len = int(max_txt_len)
        self.label_smoothing = float(label_smoothing)

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any = None) -> "BlipCaption":
        return cls.build_and_load(cfg, lambda: cls(**cls.config_kwargs(cfg, tokenizer)))

    # -- prompt ------------------------------------------------------------------------------
    @property
    def prompt_length(self) -> int:
        """Tokens of [DEC] + prompt (the original: ``len(tokenizer(prompt).input_ids) - 1``)."""
        return len(self.tokenizer(self.prompt).input_ids) - 1

    def prompt_ids(self, batch: int) -> Tensor:
        """(batch, prompt_length) ids: [DEC] then the prompt's tokens, no [SEP]."""
        ids = self.tokenizer(self.prompt, return_tensors="pt").input_ids[:, :-1]
        ids[:, 0] = self.tokenizer.bos_token_id
        return ids.to(self.device).expand(batch, -1).contiguous()

    # -- encoder / decoder -------------------------------------------------------------------
    def _image(self, samples: dict) -> Tensor:
        image = samples.get("image")
        if not isinstance(image, Tensor) or image.dim() != 4:
            got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise DataError(f"BlipCaption needs samples['image'] as a (B, 3, H, W) tensor, got {got}")
        return image.to(self.device)

    def forward_encoder(self, samples: dict) -> Tensor:
        """Image tokens (B, 1+N, D)."""
        return self.visual_encoder(self._image(samples))

    def forward_decoder(self, samples: dict, image_embeds: Tensor) -> tuple[Any, Tensor]:
        """The teacher-forced decoder on ``samples['text_input']``; returns (LMOutput, targets)."""
        texts = samples.get("text_input")
        if texts is None:
            raise DataError("BlipCaption training needs samples['text_input'] (captions starting with the prompt)")
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) != image_embeds.shape[0]:
            raise DataError(f"{len(texts)} captions for {image_embeds.shape[0]} images; give one caption per image")
        ids, mask = self.tokenize(list(texts), padding="longest", max_length=self.max_txt_len, first_token=self.tokenizer.bos_token_id)
        targets = ids.masked_fill(ids == self.tokenizer.pad_token_id, -100)
        targets[:, : self.prompt_length] = -100
        out = self.text_decoder(
            ids, mask, encoder_hidden_states=image_embeds, labels=targets, label_smoothing=self.label_smoothing
        )
        return out, targets

    def forward(self, samples: dict) -> BlipOutput:
        """Label-smoothed LM loss of the captions (prompt and padding masked)."""
        out, _ = self.forward_decoder(samples, self.forward_encoder(samples))
        return BlipOutput(loss=out.loss, loss_lm=out.loss)

    def example_samples(self, batch_size: int = 2) -> dict[str, Any]:
        """A random batch for ``forward`` (see BaseModel.example_samples)."""
        return {"image": self.example_images(batch_size), "text_input": self.example_texts(batch_size)}

    # -- generation --------------------------------------------------------------------------
    def generate(
        self,
        samples: dict,
        use_nucleus_sampling: bool = False,
        num_beams: int = 3,
        max_length: int = 30,
        min_length: int = 10,
        top_p: float = 0.9,
        repetition_penalty: float = 1.0,
        num_captions: int = 1,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """Captions for ``samples['image']``: ``num_captions`` per image, grouped per image (LAVIS order).

        Lengths count the [DEC] + prompt tokens. Sampling ignores ``num_beams`` and uses
        ``repetition_penalty`` 1.1 and top-k 50 (the original); ``generator`` seeds it if given.
        """
        ids = self.generate_ids(
            samples, use_nucleus_sampling=use_nucleus_sampling, num_beams=num_beams, max_length=max_length,
            min_length=min_length, top_p=top_p, repetition_penalty=repetition_penalty, num_captions=num_captions,
            generator=generator,
        )
        return self.decode(ids)

    def decode(self, ids: Tensor) -> list[str]:
        """``skip_special_tokens`` decoding, then the prompt's characters cut off (the original's slicing)."""
        # transformers 4.15 (the original) cleaned up tokenization spaces by default
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        return [t[len(self.prompt) :] for t in texts]

    def generate_ids(
        self,
        samples: dict,
        use_nucleus_sampling: bool = False,
        num_beams: int = 3,
        max_length: int = 30,
        min_length: int = 10,
        top_p: float = 0.9,
        repetition_penalty: float = 1.0,
        num_captions: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Token ids (B*num_captions, L), prompt included; see :meth:`generate`."""
        if int(num_captions) < 1:
            raise ConfigError(f"num_captions={num_captions}; use an integer >= 1")
        with torch.inference_mode():
            image_embeds = self.forward_encoder(samples)
            prompt = self.prompt_ids(image_embeds.shape[0])
            step, reorder = self._decoder_fns(image_embeds)
            tok = self.tokenizer
            common = dict(eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id, max_length=int(max_length),
                          min_length=int(min_length), num_return_sequences=int(num_captions))
            if use_nucleus_sampling:
                return generate(step, reorder, prompt, do_sample=True, num_beams=1, top_k=NUCLEUS_TOP_K, top_p=float(top_p),
                                repetition_penalty=NUCLEUS_REPETITION_PENALTY, generator=generator, **common)
            if int(num_beams) < int(num_captions):
                raise ConfigError(f"num_captions={num_captions} > num_beams={num_beams}; beam search returns at most num_beams captions per image")
            return generate(step, reorder, prompt, num_beams=int(num_beams), repetition_penalty=float(repetition_penalty), **common)

    def _decoder_fns(self, image_embeds: Tensor):
        """step_fn/reorder_fn of the cached decoder: image K/V are computed on the first step, once per image."""

        def step(input_ids: Tensor, past: MedKVCache | None) -> tuple[Tensor, MedKVCache]:
            out = self.text_decoder(
                input_ids,
                encoder_hidden_states=image_embeds if past is None else None,
                past_key_values=past, use_cache=True, logits_last_only=True,
            )
            return out.logits[:, -1], out.past_key_values

        return step, self.text_decoder.reorder_cache


__all__ = ["BlipCaption"]
