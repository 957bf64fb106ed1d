"""BLIP's vision encoder: a timm ViT (pre-norm blocks, CLS token, all tokens out after a final LayerNorm).

State-dict keys match the official BLIP files under ``visual_encoder.``: ``cls_token``, ``pos_embed``,
``patch_embed.proj.{weight,bias}``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``,
``norm.*``. Attention runs through timm's fused (SDPA) path.
"""

from __future__ import annotations

import logging
import math
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from lavislite.common.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

# name -> (patch_size, embed_dim, depth, num_heads, default drop_path_rate)
# The original code builds ViT-L with `0.1 or drop_path_rate`, i.e. always 0.1; here 0.1 is the default
# and an explicit value is honoured (it only matters in training).
VIT_SIZES: dict[str, dict] = {
    "base": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, drop_path_rate=0.0),
    "large": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16, drop_path_rate=0.1),
}


class VisionTransformer(nn.Module):
    """ViT returning every token, (B, 1 + N, D), after the final LayerNorm (no head, no pooling)."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        layer_norm_eps: float = 1e-6,
        use_grad_checkpointing: bool = False,
        ckpt_layer: int = 0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if img_size % patch_size != 0:
            raise ConfigError(
                f"image_size={img_size} is not divisible by the ViT patch size {patch_size}; "
                f"use a multiple of {patch_size} (e.g. {max(patch_size, img_size // patch_size * patch_size)})"
            )
        if embed_dim % num_heads != 0:
            raise ConfigError(f"ViT embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        if not 0 <= ckpt_layer <= depth:
            raise ConfigError(f"vit_ckpt_layer={ckpt_layer} must lie in [0, depth={depth}]")
        self.num_features = self.embed_dim = embed_dim
        self.use_grad_checkpointing = use_grad_checkpointing
        self.ckpt_layer = ckpt_layer

        norm_layer = partial(nn.LayerNorm, eps=layer_norm_eps)
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        dpr = torch.linspace(
            0, drop_path_rate, depth, device="cpu"
        ).tolist()  # stochastic depth grows with depth (cpu: also under a meta-device build)
        self.blocks = nn.ModuleList(
            [
                Block(
                    dim=embed_dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path=dpr[i],
                    norm_layer=norm_layer,
                    act_layer=nn.GELU,
                )
                for i in range(depth)
            ]
        )
        self.norm = norm_layer(embed_dim)

        # init_std only matters when training from scratch (checkpoints overwrite it). Tiny models trained
        # from scratch need a larger one: at 0.02 the CLS token averages the patches near-uniformly and
        # image features start collapsed (pairwise cosine ~0.99), a saddle contrastive training sits on.
        if not self.pos_embed.is_meta:  # a meta-device build waits for its checkpoint: nothing to draw
            trunc_normal_(self.pos_embed, std=init_std)
            trunc_normal_(self.cls_token, std=init_std)
            self.apply(partial(_init_weights, std=init_std))

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def resize_checkpoint_tensor(self, name: str, tensor: torch.Tensor, target_shape: torch.Size) -> torch.Tensor | None:
        """The checkpoint loader's hook: a ``pos_embed`` of another image size, interpolated to this grid."""
        if name != "pos_embed":
            return None
        return resize_pos_embed(tensor, target_shape)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._check(images)
        # a model cast to bf16/fp16 (load_model(dtype=...)) takes fp32 images from the processors
        x = self.patch_embed(images.to(self.patch_embed.proj.weight.dtype))  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        x = x + self.pos_embed[:, : x.shape[1]].to(x.dtype)
        first_ckpt = len(self.blocks) - self.ckpt_layer
        for i, blk in enumerate(self.blocks):
            if self.use_grad_checkpointing and self.training and i >= first_ckpt:
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return self.norm(x)

    def _check(self, images: torch.Tensor) -> None:
        """Every head's images pass here: a bad batch gets a clear error before any compute."""
        size = tuple(self.patch_embed.img_size)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise DataError(f"images must be a (B, 3, H, W) tensor, got {got}; use the model's eval image processor")
        if images.shape[0] == 0:
            raise DataError("empty batch: no images were given")
        if tuple(images.shape[-2:]) != size:
            raise DataError(
                f"images are {tuple(images.shape[-2:])} but the model was built for image_size={size[0]}; "
                f"preprocess with the matching processor (blip_image_eval, image_size={size[0]}) or build the model "
                f"with image_size={images.shape[-1]} (position embeddings are interpolated on load)"
            )


def _init_weights(m: nn.Module, std: float = 0.02) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def create_vit(
    vit: str,
    image_size: int,
    use_grad_checkpointing: bool = False,
    ckpt_layer: int = 0,
    drop_path_rate: float | None = None,
    **size_overrides,
) -> tuple[VisionTransformer, int]:
    """Build BLIP's ViT ("base" or "large") for ``image_size``; return ``(model, vision_width)``.

    ``drop_path_rate=None`` keeps the original default (0 for base, 0.1 for large). ``size_overrides``
    (patch_size, embed_dim, depth, num_heads, mlp_ratio, layer_norm_eps, init_std) build tiny ViTs for tests
    and from-scratch training.
    """
    if vit not in VIT_SIZES:
        raise ConfigError(f"unknown vit={vit!r}; valid values: {', '.join(VIT_SIZES)}")
    allowed = {"patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "layer_norm_eps", "init_std"}
    unknown = set(size_overrides) - allowed
    if unknown:
        raise ConfigError(f"create_vit got unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    spec = dict(VIT_SIZES[vit])
    default_dpr = spec.pop("drop_path_rate")
    spec.update(size_overrides)
    model = VisionTransformer(
        img_size=int(image_size),
        use_grad_checkpointing=use_grad_checkpointing,
        ckpt_layer=ckpt_layer,
        drop_path_rate=default_dpr if drop_path_rate is None else float(drop_path_rate),
        **spec,
    )
    return model, spec["embed_dim"]


def interpolate_pos_embed(pos_embed_ckpt: torch.Tensor, num_patches: int, num_extra_tokens: int = 1) -> torch.Tensor:
    """Resize a checkpoint's (1, extra + n*n, D) position embedding to ``num_patches`` patch positions.

    The patch grid is resized bicubically (align_corners=False); the extra (CLS) tokens are kept. Returned
    unchanged when the grid side already matches (BLIP compares int(sqrt(.)) of both sides).
    """
    orig = int(math.sqrt(pos_embed_ckpt.shape[-2] - num_extra_tokens))
    new = int(math.sqrt(num_patches))
    if orig == new:
        return pos_embed_ckpt
    dim = pos_embed_ckpt.shape[-1]
    extra = pos_embed_ckpt[:, :num_extra_tokens]
    grid = pos_embed_ckpt[:, num_extra_tokens:]
    grid = grid.reshape(-1, orig, orig, dim).permute(0, 3, 1, 2)
    # bicubic needs float (half is unsupported on CPU); cast back afterwards
    grid = F.interpolate(grid.float(), size=(new, new), mode="bicubic", align_corners=False)
    grid = grid.to(pos_embed_ckpt.dtype).permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat((extra, grid), dim=1)


def resize_pos_embed(pos_embed: torch.Tensor, target_shape: torch.Size, num_extra_tokens: int = 1) -> torch.Tensor | None:
    """A checkpoint's (1, extra + n*n, D) ``pos_embed`` resized to ``target_shape``, or None when that
    is not a resolution change (another width, e.g. ViT-L into ViT-B, or a token count that is no grid)."""
    if pos_embed.dim() != 3 or len(target_shape) != 3 or pos_embed.shape[-1] != target_shape[-1]:
        return None
    try:
        resized = interpolate_pos_embed(pos_embed, target_shape[-2] - num_extra_tokens, num_extra_tokens=num_extra_tokens)
    except (ValueError, RuntimeError) as e:
        logger.warning("Could not interpolate pos_embed %s -> %s: %s", tuple(pos_embed.shape), tuple(target_shape), e)
        return None
    return resized if resized.shape == target_shape else None
