"""BLIP image-text retrieval fine-tuning (``blip_retrieval``).

Training (``model(samples)``): ITC with momentum distillation against queued momentum features, where
captions of the same image (``samples["image_id"]``) are positives in the batch *and* in the queue, then ITM
with one hard negative per image and per text drawn from the softmaxed ITC similarities (same-id pairs
excluded). With ``negative_all_rank`` the negatives come from every rank's batch (DDP). Returns
``BlipOutput(loss=itc+itm, loss_itc, loss_itm)``.

Evaluation uses the RetrievalModel contract (:mod:`lavislite.models.protocols`; BLIP methods shared with
``blip_image_text_matching`` and ``blip_pretrain``; the task does the k-test re-ranking.

State-dict keys are the original BLIP_Retrieval ones (``*_m`` momentum copies, ``image_queue``,
``text_queue``, ``idx_queue``, ``ptr_queue``, ``temp``); LAVIS checkpoints name the pointer ``queue_ptr``
and load too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lavislite.common.dist import get_world_size
from lavislite.common.errors import DataError
from lavislite.common.registry import registry
from lavislite.models.blip.momentum import (
    MomentumContrastiveBase,
    all_gather_with_grad,
    alpha_schedule,
    concat_all_gather,
)
from lavislite.models.med import BertModel, MedConfig
from lavislite.models.outputs import BlipOutput


@registry.register_model("blip_retrieval")
class BlipRetrieval(MomentumContrastiveBase):
    """BLIP_Retrieval: ITC (momentum distillation, idx-aware targets, queues) + ITM (hard negatives)."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "coco": "models/blip/blip_retrieval_coco.yaml",
        "flickr": "models/blip/blip_retrieval_flickr.yaml",
        "tiny": "models/blip/blip_retrieval_tiny.yaml",
    }
    PTR_NAME = "ptr_queue"
    ALT_PTR_NAME = "queue_ptr"

    def __init__(
        self,
        visual_encoder: torch.nn.Module,
        vision_width: int,
        med_config: MedConfig,
        tokenizer: Any = "bert-base-uncased",
        embed_dim: int = 256,
        queue_size: int = 57600,
        momentum: float = 0.995,
        alpha: float = 0.4,
        temp: float = 0.07,
        negative_all_rank: bool = False,
        max_txt_len: int = 35,
    ) -> None:
        text_encoder = BertModel(med_config.replace(encoder_width=vision_width), add_pooling_layer=False)
        super().__init__(
            visual_encoder, vision_width, text_encoder, tokenizer, embed_dim=embed_dim, queue_size=queue_size,
            momentum=momentum, alpha=alpha, temp=temp, max_txt_len=max_txt_len, use_idx_queue=True,
        )
        self.negative_all_rank = bool(negative_all_rank)
        self._finish_init()

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any = None) -> "BlipRetrieval":
        return cls.build_and_load(cfg, lambda: cls(**cls.config_kwargs(cfg, tokenizer)))

    def forward(self, samples: dict) -> BlipOutput:
        """``samples``: ``image`` (B,3,H,W), ``text_input`` (B captions), ``image_id`` (B ints; same id = same
        image); optional ``alpha`` or LAVIS's ``epoch``/``iters``/``num_iters_per_epoch`` (alpha ramps up over
        the first 2 epochs)."""
        image, texts = self._sample_inputs(samples)
        idx = self._image_ids(samples, image.shape[0])
        alpha = alpha_schedule(self.alpha, samples)
        out = self.itc_itm_losses(image, texts, alpha, idx=idx)
        return BlipOutput(loss=out["loss_itc"] + out["loss_itm"], loss_itc=out["loss_itc"], loss_itm=out["loss_itm"])

    def example_samples(self, batch_size: int = 2) -> dict[str, Any]:
        """A random batch for ``forward`` (see BaseModel.example_samples)."""
        return {"image": self.example_images(batch_size), "text_input": self.example_texts(batch_size),
                "image_id": torch.arange(batch_size)}

    def _image_ids(self, samples: dict, batch: int) -> Tensor:
        ids = samples.get("image_id")
        if ids is None:
            raise DataError("blip_retrieval training needs samples['image_id'] (one int per sample; equal ids = same image)")
        try:
            idx = torch.as_tensor(ids if isinstance(ids, Tensor) else list(ids)).to(self.device)
        except (TypeError, ValueError, RuntimeError) as e:
            raise DataError(f"samples['image_id'] must be integers (map image names to ints in the dataset): {e}") from e
        if idx.is_floating_point() or idx.dtype == torch.bool or idx.numel() != batch:
            raise DataError(f"samples['image_id'] must hold {batch} integers, got dtype {idx.dtype} with {idx.numel()} values")
        return idx.long().view(-1)

    # -- hard negatives ---------------------------------------------------------------------------
    def _all_rank(self) -> bool:
        return self.negative_all_rank and get_world_size() > 1

    def _negative_weights(self, ctx: dict) -> tuple[Tensor, Tensor]:
        """softmax of the online ITC similarities with every same-id pair masked out (BLIP_Retrieval)."""
        idx, image_feat, text_feat = ctx["idx"], ctx["image_feat"], ctx["text_feat"]
        if self._all_rank():
            idx_world = concat_all_gather(idx)
            image_world, text_world = concat_all_gather(image_feat), concat_all_gather(text_feat)
        else:
            idx_world, image_world, text_world = idx, image_feat, text_feat
        same = torch.eq(idx, idx_world.t())
        weights_i2t = F.softmax(image_feat @ text_world.t() / self.temp, dim=1).masked_fill(same, 0)
        weights_t2i = F.softmax(text_feat @ image_world.t() / self.temp, dim=1).masked_fill(same, 0)
        return weights_i2t, weights_t2i

    def _negative_pools(self, ctx: dict) -> tuple[Tensor, Tensor, Tensor]:
        if self._all_rank():
            return all_gather_with_grad(ctx["image_embeds"]), concat_all_gather(ctx["ids"]), concat_all_gather(ctx["mask"])
        return super()._negative_pools(ctx)
