"""Plain Vision Transformer (Dosovitskiy et al., 2021), written from scratch.

The transformer pieces here (:class:`TransformerBlock`, :func:`transformer_blocks`,
:class:`PatchEmbedding`) are shared with MEDN's SEVit (lightning_modules/medn/sevit.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x)).

    ``dropout`` acts on the MLP; attention probabilities are not dropped (as in ViT), which
    keeps the fused CPU attention kernel usable.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def transformer_blocks(
    dim: int, depth: int, num_heads: int, mlp_ratio: float, dropout: float
) -> nn.Sequential:
    """``depth`` transformer blocks in sequence."""
    return nn.Sequential(
        *(TransformerBlock(dim, num_heads, mlp_ratio, dropout) for _ in range(depth))
    )


class PatchEmbedding(nn.Module):
    """Non-overlapping patches -> tokens: (N, C, H, W) -> (N, H/p, W/p, D) (channels last)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ViT(nn.Module):
    """Image (B, C, H, W) -> feature (B, num_features): patch embedding, [CLS] token, learnable
    position embeddings, ``depth`` pre-norm blocks (MLP ratio 4 as in ViT-B), final LayerNorm,
    Linear on the [CLS] token.

    Input size: position embeddings are learned for an ``image_size`` x ``image_size`` input
    (``image_size`` must be a multiple of ``patch_size``); an input of another size is resized
    bilinearly to ``image_size`` (values are not rescaled). The defaults are ViT-B/16 (patch 16,
    width 768, depth 12, 12 heads, MLP ratio 4) at 224 px. No pretrained weights are loaded.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_features: int = 768,
        image_size: int = 224,
        patch_size: int = 16,
        width: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"ViT image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size = image_size
        self.patch_embed = PatchEmbedding(in_channels, width, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (image_size // patch_size) ** 2, width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = transformer_blocks(width, depth, num_heads, mlp_ratio, dropout)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_features)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear")
        tokens = self.patch_embed(x).flatten(1, 2)  # (B, N, D)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = self.blocks(self.pos_drop(tokens + self.pos_embed))
        return self.head(self.norm(tokens[:, 0]))

