"""BLIP-2's frozen image encoders: EVA-CLIP ViT-g/14 and CLIP ViT-L/14 as LAVIS builds them, plus ``ln_vision``.

Both return every token of their last built block, (B, 1 + N, width), with no final LayerNorm: LAVIS drops
the last block of each (EVA-CLIP-g has 40, CLIP-L 24) so the Q-Former reads the second-last layer.
State-dict keys are those of LAVIS's files under ``visual_encoder.``:

- EVA: ``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.{i}.{norm1, attn.qkv, attn.q_bias,
  attn.v_bias, attn.proj, norm2, mlp.fc1, mlp.fc2}`` (timm's ``EvaBlock``: fused qkv without bias, learned
  q/v biases, a zero k bias).
- CLIP: ``class_embedding``, ``positional_embedding``, ``conv1``, ``ln_pre``, ``transformer.resblocks.{i}.
  {attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, ln_1, mlp.c_fc, mlp.c_proj, ln_2}``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.eva import EvaBlock
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back to the input dtype (LAVIS's ``ln_vision`` and CLIP norms)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


class _HalfPrecisionMixin:
    """Half-precision matmuls for a frozen encoder, as LAVIS's ``vit_precision: fp16``.

    ``to_precision`` halves only the Conv/Linear weights and biases (LayerNorms, position embeddings, CLS
    and the q/v biases stay fp32), and ``forward`` then runs under autocast in that dtype.
    """

    half_dtype: torch.dtype | None = None

    def to_precision(self, precision: str) -> "nn.Module":
        if precision not in PRECISIONS:
            raise ConfigError(f"vit_precision={precision!r}; use one of {', '.join(PRECISIONS)}")
        dtype = PRECISIONS[precision]
        self.half_dtype = dtype
        if dtype is not None:
            for module in self.modules():  # type: ignore[attr-defined]
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    module.to(dtype)
                elif isinstance(module, nn.MultiheadAttention):
                    module.to(dtype)
        return self  # type: ignore[return-value]

    def _autocast(self, images: Tensor):
        return torch.autocast(images.device.type, dtype=self.half_dtype or torch.float32, enabled=self.half_dtype is not None)


def _check_size(images: Tensor, img_size: int, name: str) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise DataError(f"{name} expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[-2:] != (img_size, img_size):
        raise DataError(
            f"{name} was built for {img_size}x{img_size} images, got {tuple(images.shape[-2:])}; set model.image_size="
            f"{images.shape[-1]} (position embeddings are interpolated on load) or resize the images"
        )


class EvaViT(_HalfPrecisionMixin, nn.Module):
    """EVA-CLIP's ViT as LAVIS's ``create_eva_vit_g`` builds it: pre-norm timm ``EvaBlock``s, exact GELU,
    LayerNorm eps 1e-6, no final norm; all tokens out."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 14,
        embed_dim: int = 1408,
        depth: int = 39,
        num_heads: int = 16,
        mlp_ratio: float = 4.3637,
        drop_path_rate: float = 0.0,
        use_grad_checkpointing: bool = False,
        layer_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ConfigError(f"image_size={img_size} is not a multiple of the EVA patch size {patch_size}")
        if embed_dim % num_heads:
            raise ConfigError(f"EVA embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.img_size, self.num_features = img_size, embed_dim
        self.use_grad_checkpointing = use_grad_checkpointing
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # also when built on the meta device
        norm = partial(nn.LayerNorm, eps=layer_norm_eps)
        self.blocks = nn.ModuleList(
            EvaBlock(embed_dim, num_heads, qkv_bias=True, mlp_ratio=mlp_ratio, drop_path=rates[i], norm_layer=norm)
            for i in range(depth)
        )
        if not self.pos_embed.is_meta:
            self._init_weights()

    def _init_weights(self) -> None:
        """LAVIS's init: truncated normal 0.02, zero biases, and each block's output projections scaled by
        1/sqrt(2 * layer)."""
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for layer, block in enumerate(self.blocks, start=1):
            block.attn.proj.weight.data.div_(math.sqrt(2.0 * layer))
            block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * layer))

    def forward(self, images: Tensor) -> Tensor:
        _check_size(images, self.img_size, "EVA ViT")
        with self._autocast(images):
            x = self.patch_embed(images.to(self.patch_embed.proj.weight.dtype))
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            x = x + self.pos_embed  # fp32 position embeddings keep the residual stream in fp32
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False) if self.use_grad_checkpointing and self.training else block(x)
        return x


class _ResidualAttentionBlock(nn.Module):
    """CLIP's block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))`` with QuickGELU."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = LayerNormFp32(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = LayerNormFp32(width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(_ResidualAttentionBlock(width, heads) for _ in range(layers))


class ClipViT(_HalfPrecisionMixin, nn.Module):
    """OpenAI CLIP's visual tower as LAVIS's ``create_clip_vit_L`` builds it: ``ln_pre``, the blocks, no
    ``ln_post`` and no projection; all tokens out."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 14,
        width: int = 1024,
        layers: int = 23,
        heads: int = 16,
        use_grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ConfigError(f"image_size={img_size} is not a multiple of the CLIP patch size {patch_size}")
        self.img_size, self.num_features = img_size, width
        self.use_grad_checkpointing = use_grad_checkpointing
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        grid = img_size // patch_size
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNormFp32(width)
        self.transformer = _Transformer(width, layers, heads)

    def forward(self, images: Tensor) -> Tensor:
        _check_size(images, self.img_size, "CLIP ViT")
        with self._autocast(images):
            x = self.conv1(images.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)  # (B, N, width)
            cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
            x = self.ln_pre(x)
            for block in self.transformer.resblocks:
                x = checkpoint(block, x, use_reentrant=False) if self.use_grad_checkpointing and self.training else block(x)
        return x


# ------------------------------------------------------------------------------------------------
# builders, position-embedding resizing
# ------------------------------------------------------------------------------------------------
EVA_CLIP_G = dict(patch_size=14, embed_dim=1408, depth=39, num_heads=16, mlp_ratio=4.3637)
CLIP_L = dict(patch_size=14, width=1024, layers=23, heads=16)


def create_eva_vit_g(
    image_size: int = 224,
    drop_path_rate: float = 0.0,
    use_grad_checkpointing: bool = False,
    precision: str = "fp16",
    **size_overrides: Any,
) -> EvaViT:
    """EVA-CLIP ViT-g/14 with 39 of its 40 blocks (``size_overrides`` shrink it for tests)."""
    spec = {**EVA_CLIP_G, **_checked(size_overrides, {*EVA_CLIP_G, "layer_norm_eps"}, "eva_clip_g")}
    model = EvaViT(img_size=int(image_size), drop_path_rate=float(drop_path_rate), use_grad_checkpointing=use_grad_checkpointing, **spec)
    return model.to_precision(precision)


def create_clip_vit_l(
    image_size: int = 224,
    drop_path_rate: float = 0.0,
    use_grad_checkpointing: bool = False,
    precision: str = "fp16",
    **size_overrides: Any,
) -> ClipViT:
    """OpenAI CLIP ViT-L/14 with 23 of its 24 blocks (LAVIS has no drop path here; the argument is accepted
    for a uniform signature and must be 0)."""
    if drop_path_rate:
        raise ConfigError(f"clip_L has no drop path; drop_path_rate={drop_path_rate} must be 0")
    spec = {**CLIP_L, **_checked(size_overrides, set(CLIP_L), "clip_L")}
    model = ClipViT(img_size=int(image_size), use_grad_checkpointing=use_grad_checkpointing, **spec)
    return model.to_precision(precision)


def _registered_from_config(create: Callable[..., nn.Module]) -> Callable[[Any], tuple[nn.Module, int]]:
    """A vision-encoder factory entry: ``(model_cfg) -> (module, width)`` reading BLIP-2's config keys."""

    def build(cfg: Any) -> tuple[nn.Module, int]:
        overrides = cfg.get("vit_overrides") or {}
        if isinstance(overrides, DictConfig):
            overrides = OmegaConf.to_container(overrides, resolve=True)
        overrides = {k: v for k, v in dict(overrides).items() if k != "_open_"}
        module = create(
            image_size=int(cfg.get("image_size", 224)),
            drop_path_rate=float(cfg.get("drop_path_rate", 0.0)),
            use_grad_checkpointing=bool(cfg.get("use_grad_checkpoint", False)),
            precision=str(cfg.get("vit_precision", "fp16")),
            **overrides,
        )
        return module, module.num_features

    return build


# LAVIS's ``vit_model`` names; a BLIP-2 config selects one with ``vit_model``.
registry.register_vision_encoder("eva_clip_g", _registered_from_config(create_eva_vit_g))
registry.register_vision_encoder("clip_L", _registered_from_config(create_clip_vit_l))


def _checked(overrides: dict[str, Any], allowed: set[str], name: str) -> dict[str, Any]:
    unknown = set(overrides) - allowed
    if unknown:
        raise ConfigError(f"vit_overrides for {name}: unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return overrides


def resize_position_embedding(pos: Tensor, num_positions: int, *, align_corners: bool) -> Tensor:
    """Resize a (1, 1 + n*n, D) or (1 + n*n, D) position embedding to ``num_positions`` (CLS kept, the patch
    grid resized bicubically). EVA (and BLIP) use ``align_corners=False``, LAVIS's CLIP ``True``."""
    squeeze = pos.dim() == 2
    table = pos[None] if squeeze else pos
    old, new = int(round(math.sqrt(table.shape[1] - 1))), int(round(math.sqrt(num_positions - 1)))
    if old * old + 1 != table.shape[1] or new * new + 1 != num_positions:
        raise ValueError(f"position embedding of {table.shape[1]} tokens -> {num_positions}: not 1 + a square grid")
    if old != new:
        grid = table[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=align_corners)
        table = torch.cat([table[:, :1], grid.to(table.dtype).permute(0, 2, 3, 1).reshape(1, new * new, -1)], dim=1)
    return table[0] if squeeze else table


__all__ = [
    "EvaViT", "ClipViT", "LayerNormFp32", "create_eva_vit_g", "create_clip_vit_l",
    "resize_position_embedding",
]
