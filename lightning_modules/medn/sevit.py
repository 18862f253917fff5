"""Sparse Emotion Vision Transformer, SEVit (MEDN §III-B1, eqs. 2-4).

Reading taken: regions are taken on the token grid after a shared patch embedding; this is
equivalent to splitting the flow tensor into s^2 spatial sub-tensors (eq. 2) when patch
boundaries align with region boundaries, which the constructor enforces. Every region keeps all
T' time steps, attention runs only inside a region (regions are moved into the batch dimension,
no masks), and the outputs are put back in place (the concatenation of eq. 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_modules.backbones.vit import PatchEmbedding, transformer_blocks


def to_regions(grid: Tensor, s: int) -> Tensor:
    """(B, T, h, w, D) -> (B*s*s, T*(h/s)*(w/s), D): one sequence per spatial region."""
    b, t, h, w, d = grid.shape
    x = grid.reshape(b, t, s, h // s, s, w // s, d).permute(0, 2, 4, 1, 3, 5, 6)
    return x.reshape(b * s * s, t * (h // s) * (w // s), d)


def from_regions(seqs: Tensor, shape: torch.Size, s: int) -> Tensor:
    """Inverse of :func:`to_regions`: reassemble the region outputs into (B, T, h, w, D)."""
    b, t, h, w, d = shape
    x = seqs.view(b, s, s, t, h // s, w // s, d).permute(0, 3, 1, 4, 2, 5, 6)
    return x.reshape(b, t, h, w, d)


class SparseAttentionStage(nn.Module):
    """SEVit(X, s) of eq. 2 for one sparsity rate s, plus the pooling giving F_k (eq. 3)."""

    def __init__(
        self, rate: int, dim: int, depth: int, num_heads: int, mlp_ratio: float, dropout: float
    ):
        super().__init__()
        self.rate = rate
        self.blocks = transformer_blocks(dim, depth, num_heads, mlp_ratio, dropout)
        self.norm = nn.LayerNorm(dim)

    def tokens(self, grid: Tensor) -> Tensor:
        """Region-restricted attention over a token grid (B, T, h, w, D) -> same shape."""
        return from_regions(self.blocks(to_regions(grid, self.rate)), grid.shape, self.rate)

    def forward(self, grid: Tensor) -> Tensor:
        """F_k: mean of the layer-normalised output tokens, (B, D)."""
        return self.norm(self.tokens(grid)).mean(dim=(1, 2, 3))


class SEVit(nn.Module):
    """Flow sequence (B, T', C, H, W) -> emotion feature F_e (B, D) (eqs. 2-4).

    Shared patch embedding (Conv2d, kernel = stride = patch_size, per frame) plus learnable
    spatial and temporal position embeddings give a token grid (B, T', h, w, D). Each sparsity
    rate has its own transformer blocks and final LayerNorm; ``F_e = sum_k gamma_k F_k`` with
    learnable ``gamma_k`` initialised to 1/K (eq. 4). ``sparse_rates=(1,)`` is a plain ViT.
    """

    def __init__(
        self,
        in_channels: int = 2,
        image_size: int = 144,
        num_frames: int = 7,
        patch_size: int = 18,
        embed_dim: int = 64,
        depth: int = 1,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        sparse_rates: Sequence[int] = (1, 2, 4, 8),
        dropout: float = 0.1,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} not divisible by patch_size {patch_size}")
        grid = image_size // patch_size
        bad = [s for s in sparse_rates if s < 1 or grid % s]
        if bad or not sparse_rates:
            raise ValueError(
                f"token grid side {grid} (= {image_size}/{patch_size}) must be divisible by "
                f"every sparse rate; offending rates: {bad or 'none given'}"
            )
        self.num_frames = num_frames
        self.patch_embed = PatchEmbedding(in_channels, embed_dim, patch_size)
        self.spatial_pos = nn.Parameter(torch.zeros(1, 1, grid, grid, embed_dim))
        self.temporal_pos = nn.Parameter(torch.zeros(1, num_frames, 1, 1, embed_dim))
        nn.init.trunc_normal_(self.spatial_pos, std=0.02)
        nn.init.trunc_normal_(self.temporal_pos, std=0.02)
        self.pos_drop = nn.Dropout(dropout)
        self.stages = nn.ModuleList(
            SparseAttentionStage(s, embed_dim, depth, num_heads, mlp_ratio, dropout)
            for s in sparse_rates
        )
        self.gamma = nn.Parameter(torch.full((len(sparse_rates),), 1.0 / len(sparse_rates)))

    def embed(self, flow: Tensor) -> Tensor:
        """(B, T', C, H, W) -> token grid (B, T', h, w, D) with position embeddings."""
        b, t = flow.shape[:2]
        if t != self.num_frames:
            raise ValueError(f"SEVit expects {self.num_frames} flow frames, got {t}")
        x = self.patch_embed(flow.flatten(0, 1)).unflatten(0, (b, t))  # (B, T', h, w, D)
        return self.pos_drop(x + self.spatial_pos + self.temporal_pos)

    def rate_features(self, flow: Tensor) -> Tensor:
        """Per-rate features F_k (eq. 3), stacked as (K, B, D)."""
        grid = self.embed(flow)
        return torch.stack([stage(grid) for stage in self.stages])

    def forward(self, flow: Tensor) -> Tensor:
        """F_e = sum_k gamma_k F_k (eq. 4), (B, D)."""
        return torch.einsum("k,kbd->bd", self.gamma, self.rate_features(flow))
