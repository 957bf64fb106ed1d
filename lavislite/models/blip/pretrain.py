"""BLIP pre-training (``blip_pretrain``).

One model, three losses (``BlipOutput(loss=itc+itm+lm, loss_itc, loss_itm, loss_lm)``):

* ITC: unimodal image and text ([CLS]) features against momentum features of the batch plus the queues,
  targets = ``alpha * softmax(momentum sims) + (1 - alpha) * diagonal``;
* ITM: [ENC] text cross-attending to the image, one hard negative image per text and one hard negative text
  per image, drawn from ``softmax(ITC sims over the batch) + 1e-4`` with the diagonal zeroed;
* LM: the image-grounded decoder ([DEC] first) with label smoothing 0.1.

The text encoder and the decoder share every parameter except their self-attention blocks
(``attention.self.*``, ``attention.output.*``), as ``tie_encoder_decoder_weights`` does in BLIP: the shared
sub-modules are the *same module objects*, so the state dict still holds both names (as the official
pre-training checkpoints do) and the optimizer sees each tensor once.

Model types load the official pre-training checkpoints (224 px). ``init_from`` optionally initialises a fresh
model the way BLIP starts pre-training: ViT from DeiT-B (or a timm model), text from bert-base-uncased.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from lavislite.common.config import constructor_kwargs
from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry
from lavislite.models.blip.base import _plain
from lavislite.models.blip.momentum import MomentumContrastiveBase, alpha_schedule, copy_params
from lavislite.models.med import BertLMHeadModel, BertModel, MedConfig
from lavislite.models.outputs import BlipOutput

logger = logging.getLogger(__name__)

# where BLIP's pre-training starts
DEIT_BASE_URL = "https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth"
VIT_LARGE_TIMM = "timm:vit_large_patch16_224.augreg_in21k"
BERT_HUB_ID = "google-bert/bert-base-uncased"

UNSHARED_CHILD = "attention"  # the self-attention block; `crossattention` is a different name and is shared


def tie_encoder_decoder(encoder: nn.Module, decoder: nn.Module, skip: str = UNSHARED_CHILD) -> list[str]:
    """Make ``encoder`` use ``decoder``'s sub-modules everywhere except children named ``skip``.

    A child without any ``skip`` descendant is shared whole; one with such a descendant is walked into.
    Returns the shared module paths. Equivalent to BLIP's ``tie_encoder_decoder_weights(enc, dec, '',
    '/attention')``: embeddings, cross-attention, intermediate and output blocks are shared; the
    self-attention ``attention.self`` / ``attention.output`` stay separate.
    """
    shared: list[str] = []

    def has_skip(module: nn.Module) -> bool:
        return any(name.split(".")[-1] == skip for name, _ in module.named_modules() if name)

    def walk(enc: nn.Module, dec: nn.Module, prefix: str) -> None:
        for name, dec_child in dec.named_children():
            enc_child = getattr(enc, name, None)
            if name == skip or enc_child is None:
                continue
            if type(enc_child) is not type(dec_child):
                raise ConfigError(f"cannot tie {prefix}{name}: encoder has {type(enc_child).__name__}, decoder {type(dec_child).__name__}")
            if has_skip(dec_child):
                walk(enc_child, dec_child, f"{prefix}{name}.")
            else:
                enc._modules[name] = dec_child
                shared.append(f"{prefix}{name}")

    walk(encoder, decoder, "")
    return shared


@registry.register_model("blip_pretrain")
class BlipPretrain(MomentumContrastiveBase):
    """BLIP_Pretrain: ITC + ITM + LM with momentum encoders, queues and a tied encoder/decoder."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "base": "models/blip/blip_pretrain_base.yaml",
        "base_14m": "models/blip/blip_pretrain_base_14m.yaml",
        "base_129m": "models/blip/blip_pretrain_base_129m.yaml",
        "capfilt_large": "models/blip/blip_pretrain_capfilt_large.yaml",
        "large": "models/blip/blip_pretrain_large.yaml",
        "tiny": "models/blip/blip_pretrain_tiny.yaml",
    }
    PTR_NAME = "queue_ptr"
    ALT_PTR_NAME = "ptr_queue"

    def __init__(
        self,
        visual_encoder: nn.Module,
        vision_width: int,
        med_config: MedConfig,
        tokenizer: Any = "bert-base-uncased",
        embed_dim: int = 256,
        queue_size: int = 57600,
        momentum: float = 0.995,
        alpha: float = 0.4,
        temp: float = 0.07,
        max_txt_len: int = 30,
        label_smoothing: float = 0.1,
        tie_text_weights: bool = True,
    ) -> None:
        text_config = med_config.replace(encoder_width=vision_width, add_cross_attention=True)
        text_encoder = BertModel(text_config, add_pooling_layer=False)
        super().__init__(
            visual_encoder, vision_width, text_encoder, tokenizer, embed_dim=embed_dim, queue_size=queue_size,
            momentum=momentum, alpha=alpha, temp=temp, max_txt_len=max_txt_len, use_idx_queue=False,
        )
        self.text_decoder = BertLMHeadModel(text_config)
        self.label_smoothing = float(label_smoothing)
        self.shared_text_modules = tie_encoder_decoder(self.text_encoder, self.text_decoder.bert) if tie_text_weights else []
        self._finish_init()  # momentum copies start equal to the (tied) online modules

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any = None) -> "BlipPretrain":
        med_extra = {}
        if cfg.get("text_vocab_size") is not None and "vocab_size" not in _plain(cfg.get("med_overrides")):
            med_extra["vocab_size"] = int(cfg.text_vocab_size)
        init_from = _plain(cfg.get("init_from"))

        def build() -> "BlipPretrain":
            vit, width = cls.build_vision_encoder(cfg)
            source = cls.tokenizer_source(cfg, tokenizer)
            backbone = {"visual_encoder": vit, "vision_width": width, "tokenizer": source,
                        "med_config": cls.build_med_config(cfg, tokenizer=source, **med_extra)}
            model = cls(**backbone, **constructor_kwargs(cfg, cls, exclude=backbone))
            if init_from:
                model.init_from(vit=init_from.get("vit"), bert=init_from.get("bert"))
            return model

        # init_from loads real weights before the checkpoint: no meta-device build then
        return cls.build_and_load(cfg, build, skip_init=not init_from)

    # -- training ---------------------------------------------------------------------------------
    def forward(self, samples: dict) -> BlipOutput:
        """``samples``: ``image`` (B,3,H,W), ``text_input`` (B captions); optional ``alpha`` or LAVIS's
        ``epoch``/``iters``/``num_iters_per_epoch`` (alpha ramps up over the first 2 epochs)."""
        image, texts = self._sample_inputs(samples)
        out = self.itc_itm_losses(image, texts, alpha_schedule(self.alpha, samples))
        ids, mask = out["input_ids"], out["attention_mask"]
        dec_ids = ids.clone()
        dec_ids[:, 0] = self.tokenizer.bos_token_id
        labels = dec_ids.masked_fill(dec_ids == self.tokenizer.pad_token_id, -100)
        loss_lm = self.text_decoder(
            dec_ids, mask, encoder_hidden_states=out["image_embeds"], labels=labels,
            label_smoothing=self.label_smoothing, return_logits=False,
        ).loss
        loss = out["loss_itc"] + out["loss_itm"] + loss_lm
        return BlipOutput(loss=loss, loss_itc=out["loss_itc"], loss_itm=out["loss_itm"], loss_lm=loss_lm)

    def example_samples(self, batch_size: int = 2) -> dict[str, Any]:
        """A random batch for ``forward`` (see BaseModel.example_samples)."""
        return {"image": self.example_images(batch_size), "text_input": self.example_texts(batch_size)}

    def _negative_weights(self, ctx: dict) -> tuple[Tensor, Tensor]:
        """BLIP_Pretrain: softmax over the batch columns of the ITC similarities, +1e-4, diagonal zeroed."""
        batch = ctx["batch"]
        weights_i2t = torch.softmax(ctx["sim_i2t"][:, :batch].float(), dim=1) + 1e-4
        weights_t2i = torch.softmax(ctx["sim_t2i"][:, :batch].float(), dim=1) + 1e-4
        weights_i2t.fill_diagonal_(0)
        weights_t2i.fill_diagonal_(0)
        return weights_i2t, weights_t2i

    # -- initialisation for pre-training -------------------------------------------------------------
    def init_from(self, vit: str | None = None, bert: str | None = None) -> None:
        """Initialise like BLIP's pre-training: ``vit`` = a DeiT/ViT checkpoint (file or URL, e.g.
        ``DEIT_BASE_URL``) or ``"timm:<model name>"`` (e.g. ``VIT_LARGE_TIMM``); ``bert`` = a BERT checkpoint
        (transformers directory, hub id such as ``BERT_HUB_ID``, or file). Cross-attention and heads stay
        random; the word embeddings keep their extra [DEC]/[ENC] rows random. Momentum copies follow."""
        from lavislite.common.checkpoint import load_checkpoint, read_state_dict

        if vit:
            if str(vit).startswith("timm:"):
                import timm

                sd = timm.create_model(str(vit)[5:], pretrained=True).state_dict()
            else:
                sd = read_state_dict(vit)
            sd = {k: v for k, v in sd.items() if not k.startswith(("head", "fc_norm", "dist_token"))}
            # partial on purpose (strict=False): only the trunk is initialised, the rest stays random
            logger.info("init_from vit %s: %s", vit, load_checkpoint(self.visual_encoder, sd, strict=False))
        if bert:
            sd = _bert_state_dict(read_state_dict(bert))
            trunk = {k[len("bert."):]: v for k, v in sd.items() if k.startswith("bert.")}
            trunk = {k: v for k, v in trunk.items() if not k.startswith(("pooler.", "embeddings.token_type"))}
            head = {k: v for k, v in sd.items() if k.startswith("cls.predictions.")}
            if not trunk:
                raise ConfigError(f"init_from bert={bert!r}: no 'bert.*' keys found; give a BERT (pre-training/MLM) checkpoint")
            _fit_vocab(trunk, "embeddings.word_embeddings.weight", self.text_encoder.embeddings.word_embeddings.weight)
            _fit_vocab(head, "cls.predictions.bias", self.text_decoder.cls.predictions.bias)
            head.pop("cls.predictions.decoder.weight", None)  # tied to the word embeddings
            head.pop("cls.predictions.decoder.bias", None)
            decoder_sd = {**{f"bert.{k}": v for k, v in trunk.items()}, **head}
            logger.info("init_from bert (encoder) %s: %s", bert, load_checkpoint(self.text_encoder, trunk, strict=False))
            logger.info("init_from bert (decoder) %s: %s", bert, load_checkpoint(self.text_decoder, decoder_sd, strict=False))
        copy_params(self.momentum_pairs())


def _bert_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Old BERT files name LayerNorm parameters gamma/beta."""
    return {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): v for k, v in sd.items()}


def _fit_vocab(sd: dict[str, Tensor], key: str, target: Tensor) -> None:
    """Copy the checkpoint rows into the model's (larger) vocabulary; extra rows keep their init."""
    if key not in sd or sd[key].shape == target.shape:
        return
    src = sd[key]
    rows = min(src.shape[0], target.shape[0])
    merged = target.detach().clone()
    merged[:rows] = src[:rows].to(merged.dtype)
    sd[key] = merged
