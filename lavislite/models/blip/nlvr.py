"""BLIP NLVR2 (``blip_nlvr``): is the sentence true of the image pair?

The text encoder is the MED with twin cross-attention (``num_cross_images=2``: ``self0``/``self1``,
``dense0``/``dense1``, averaged in layers 0-5 and merged by ``merge_layer`` from layer 6). The [ENC] output
token goes through ``cls_head`` (index 1 = True). Both images of a pair pass through the ViT in one batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lavislite.common.errors import DataError
from lavislite.common.registry import registry
from lavislite.models.blip.base import BlipBase
from lavislite.models.med import BertModel, MedConfig
from lavislite.models.outputs import BlipOutput

# single cross-attention names -> the twin names they initialise (BLIP's NLVR load_checkpoint)
_TWIN_SOURCES = (("crossattention.self.", ("crossattention.self0.", "crossattention.self1.")),
                 ("crossattention.output.dense.", ("crossattention.output.dense0.", "crossattention.output.dense1.")))


@registry.register_model("blip_nlvr")
class BlipNLVR(BlipBase):
    """BLIP for NLVR2. Samples: ``image0``, ``image1`` (B,3,H,W), ``text_input``, ``label`` (1 = True)."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "nlvr": "models/blip/blip_nlvr_nlvr.yaml",
        "tiny": "models/blip/blip_nlvr_tiny.yaml",
    }

    def __init__(
        self,
        visual_encoder: nn.Module,
        vision_width: int,
        med_config: MedConfig,
        tokenizer: Any = "bert-base-uncased",
        num_classes: int = 2,
    ) -> None:
        super().__init__(tokenizer)
        self.visual_encoder = visual_encoder
        self.text_encoder = BertModel(med_config.replace(encoder_width=vision_width, num_cross_images=2), add_pooling_layer=False)
        hidden = med_config.hidden_size
        self.cls_head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any = None) -> "BlipNLVR":
        return cls.build_and_load(cfg, lambda: cls(**cls.config_kwargs(cfg, tokenizer)))

    def adapt_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Initialise the twin cross-attention from single cross-attention weights (pretrain checkpoints).

        As BLIP's NLVR loader: every ``crossattention.self.*`` goes to ``self0`` and ``self1``, every
        ``crossattention.output.dense.*`` to ``dense0`` and ``dense1``; ``merge_layer`` stays as initialised.
        A checkpoint that already has the twin keys (an NLVR checkpoint) is returned unchanged.
        """
        if any(".crossattention.self0." in k for k in state_dict):
            return state_dict
        out = dict(state_dict)
        for key, value in state_dict.items():
            if not key.startswith("text_encoder."):
                continue  # text_decoder.* of a pretrain checkpoint: not part of this model
            for single, twins in _TWIN_SOURCES:
                if single in key:
                    for twin in twins:
                        out[key.replace(single, twin)] = value
                    del out[key]
        return out

    # -- forward -----------------------------------------------------------------------------
    def _logits(self, samples: dict) -> Tensor:
        for key in ("image0", "image1", "text_input"):
            if samples.get(key) is None:
                raise DataError(f"BlipNLVR needs samples[{key!r}] (image0, image1: (B,3,H,W); text_input: list[str])")
        image0, image1, texts = samples["image0"], samples["image1"], samples["text_input"]
        if isinstance(texts, str):
            texts = [texts]
        batch = image0.shape[0]
        if image1.shape != image0.shape or len(texts) != batch:
            raise DataError(
                f"NLVR batch: image0 {tuple(image0.shape)}, image1 {tuple(image1.shape)}, {len(texts)} texts; "
                "give one sentence per image pair, both images of the same shape"
            )
        embeds = self.visual_encoder(torch.cat([image0, image1]).to(self.device))
        embeds0, embeds1 = embeds[:batch], embeds[batch:]
        # original: padding='longest', no truncation; cut only at the position limit
        ids, mask = self.tokenize(
            texts, padding="longest", max_length=self.text_encoder.config.max_position_embeddings,
            first_token=self.tokenizer.enc_token_id,
        )
        hidden = self.text_encoder(ids, mask, encoder_hidden_states=[embeds0, embeds1]).last_hidden_state
        return self.cls_head(hidden[:, 0])

    def forward(self, samples: dict) -> BlipOutput:
        """Cross-entropy of the pair classifier against ``samples['label']``."""
        if samples.get("label") is None:
            raise DataError("BlipNLVR training needs samples['label'] (LongTensor, 1 = True)")
        logits = self._logits(samples)
        loss = F.cross_entropy(logits, torch.as_tensor(samples["label"], device=logits.device).long())
        return BlipOutput(loss=loss, extras={"logits": logits})

    def example_samples(self, batch_size: int = 2) -> dict[str, Any]:
        """A random batch for ``forward`` (see BaseModel.example_samples)."""
        return {"image0": self.example_images(batch_size), "image1": self.example_images(batch_size),
                "text_input": self.example_texts(batch_size), "label": torch.arange(batch_size) % 2}

    @torch.no_grad()
    def predict(self, samples: dict) -> dict[str, Tensor | None]:
        """``{"predictions": argmax class (B,), "targets": samples['label'] or None}``."""
        logits = self._logits(samples)
        label = samples.get("label")
        return {
            "predictions": logits.argmax(dim=1),
            "targets": torch.as_tensor(label, device=logits.device).long() if label is not None else None,
        }
