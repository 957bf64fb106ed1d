"""A toy second model family, living outside lavislite and registered by importing this module.

It differs from BLIP where a real second family would: its own vision encoder (a patch convolution, no
ViT), its own checkpoint layout (``toyfam/<module>/<param>`` keys), and several ITC vectors per image
(learned queries pooling the patches) whose similarity to a text is the max over them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lavislite.common.config import constructor_kwargs
from lavislite.common.registry import registry
from lavislite.models.base_model import BaseModel

HERE = Path(__file__).parent
PREFIX = "toyfam/"


class PatchEncoder(nn.Module):
    """(B, 3, H, W) -> (B, (H/patch)*(W/patch), width) patch tokens."""

    def __init__(self, width: int, patch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, image: Tensor) -> Tensor:
        return self.conv(image).flatten(2).transpose(1, 2)


@registry.register_vision_encoder("toyfam_patch")
def build_patch_encoder(cfg: Any) -> tuple[nn.Module, int]:
    """The family's vision encoder factory: ``(encoder, token width)`` from the model config."""
    width = int(cfg.get("width", 16))
    return PatchEncoder(width, int(cfg.get("patch_size", 8))), width


class ToyFamLayout:
    """The family's published checkpoint layout: ``toyfam/visual/conv/weight`` for ``visual_encoder.conv.weight``."""

    @staticmethod
    def detect(keys: Any) -> bool:
        return any(str(k).startswith(PREFIX) for k in keys)

    @staticmethod
    def convert(sd: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for key, value in sd.items():
            name = key[len(PREFIX):].replace("/", ".") if key.startswith(PREFIX) else key
            out[name.replace("visual.", "visual_encoder.", 1) if name.startswith("visual.") else name] = value
        return out

    @staticmethod
    def to_foreign(sd: dict[str, Tensor]) -> dict[str, Tensor]:
        """The inverse of :meth:`convert`: how the family's own training code saves its weights."""
        return {PREFIX + k.replace("visual_encoder.", "visual.", 1).replace(".", "/"): v for k, v in sd.items()}


registry.register_checkpoint_converter("toyfam_layout", ToyFamLayout)


@registry.register_model("toyfam_retrieval")
class ToyFamRetrieval(BaseModel):
    """Image-text retrieval with ``num_query`` ITC vectors per image (the RetrievalModel contract)."""

    PRETRAINED_MODEL_CONFIG_DICT = {"tiny": str(HERE / "second_family_tiny.yaml")}
    checkpoint_converters = ("toyfam_layout",)

    def __init__(self, tokenizer: Any, visual_encoder: nn.Module, vision_width: int, embed_dim: int = 8,
                 num_query: int = 3, image_size: int = 32) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.visual_encoder = visual_encoder
        self.query = nn.Parameter(torch.randn(num_query, vision_width))
        self.vision_proj = nn.Linear(vision_width, embed_dim)
        self.word_embeddings = nn.Embedding(len(tokenizer), vision_width)
        self.text_proj = nn.Linear(vision_width, embed_dim)
        self.itm_mix = nn.Linear(vision_width, vision_width)

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any = None) -> "ToyFamRetrieval":
        if tokenizer is None:  # the house convention: a caller may hand over a tokenizer it already has
            tokenizer = registry.get_tokenizer(str(cfg.get("tokenizer_kind", "bert_wordpiece")))(cfg.tokenizer)

        def build() -> "ToyFamRetrieval":
            encoder, width = registry.get_vision_encoder(str(cfg.vision_encoder))(cfg)
            kwargs = constructor_kwargs(cfg, cls, exclude=("tokenizer", "visual_encoder", "vision_width"))
            return cls(tokenizer, encoder, width, **kwargs)

        return cls.build_and_load(cfg, build)

    # -- the RetrievalModel contract -------------------------------------------------------------
    def encode_image(self, image: Tensor) -> tuple[Tensor, Tensor]:
        tokens = self.visual_encoder(image)  # (B, N, W)
        attn = torch.softmax(self.query @ tokens.transpose(1, 2), dim=-1)  # (B, Q, N)
        return tokens, self.vision_proj(attn @ tokens)  # (B, Q, E): several ITC vectors per image

    def encode_text(self, texts: Sequence[str], max_length: int = 35) -> tuple[Tensor, Tensor, Tensor]:
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        ids, mask = enc.input_ids.to(self.query.device), enc.attention_mask.to(self.query.device)
        return self.text_proj(self._text(ids, mask)), ids, mask

    def itc_similarity(self, image_feats: Tensor, text_feats: Tensor) -> Tensor:
        img = F.normalize(image_feats.float(), dim=-1)  # (n_img, Q, E)
        txt = F.normalize(text_feats.float(), dim=-1)  # (n_txt, E)
        return torch.einsum("iqe,te->iqt", img, txt).amax(dim=1)

    def itm_logits(self, image_tokens: Tensor, input_ids: Tensor, attention_mask: Tensor,
                   image_atts: Tensor | None = None) -> Tensor:
        r = input_ids.shape[0] // image_tokens.shape[0]
        img = self.itm_mix(image_tokens).mean(1).repeat_interleave(r, 0)
        return torch.tanh((img * self._text(input_ids, attention_mask)).sum(-1))

    def _text(self, ids: Tensor, mask: Tensor) -> Tensor:
        emb = self.word_embeddings(ids) * mask.unsqueeze(-1)
        return emb.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)

    # -- training and the smoke test ----------------------------------------------------------------
    def forward(self, samples: dict) -> Tensor:
        """The ITC loss of a batch of matching (image, text) pairs."""
        _, image_feats = self.encode_image(samples["image"])
        text_feats, _, _ = self.encode_text(samples["text_input"])
        sims = self.itc_similarity(image_feats, text_feats) / 0.07
        target = torch.arange(sims.shape[0], device=sims.device)
        return (F.cross_entropy(sims, target) + F.cross_entropy(sims.t(), target)) / 2

    def example_samples(self, batch_size: int = 2) -> dict[str, Any]:
        size = self.image_size
        return {"image": torch.rand(batch_size, 3, size, size, device=self.query.device),
                "text_input": [f"a picture number {i}" for i in range(batch_size)]}
