"""Collaborative Fusion Module, CoFM (MEDN §III-C, eqs. 9-14), and the Table V No.3 ablation.

Reading taken (the paper is ambiguous): eq. 9 concatenates F_m_perp and F_e_perp; since
attention needs a token axis, the concatenation is viewed as two D-dim tokens
[motion, emotion]. A shared Linear gives Q, K, V per token (eq. 10), and
softmax(QK^T / sqrt(d_k)) V over the two tokens (eq. 11, single head, d_k = D) gives F_col,
split into F_col,m and F_col,e. Then each branch has its own multi-head attention whose query
comes from the branch's own orthogonalised feature (Q_m from F_m_perp, Q_e from F_e_perp) and
whose keys/values are projected from BOTH collaborative tokens (K_col,m, K_col,e, V_col,m,
V_col,e); with a single key the softmax would be the constant 1. This gives F'_m and F'_e.
Per-sample scalar weights w_m = sigmoid(W1 GELU(W2 F'_m)), w_e = sigmoid(W3 GELU(W4 F'_e))
(eqs. 12-13) are normalised to w_m + w_e = 1, and F_fusion = w_m F'_m + w_e F'_e (eq. 14).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FusionOutput(NamedTuple):
    """Fused feature (B, D), branch weights (B, 1) and the weighted branch features (B, D)."""

    fused: Tensor
    w_m: Tensor
    w_e: Tensor
    f_m: Tensor
    f_e: Tensor


def _gate(dim: int, hidden: int) -> nn.Sequential:
    """Eqs. 12-13 without the sigmoid: Linear(D, hidden) -> GELU -> Linear(hidden, 1)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))


class CoFM(nn.Module):
    """Collaborative fusion of orthogonalised motion / emotion features (eqs. 9-14)."""

    def __init__(self, dim: int, num_heads: int = 4):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)  # eq. 10, shared by both tokens
        self.attn_m = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.attn_e = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.gate_m = _gate(dim, max(dim // 2, 1))
        self.gate_e = _gate(dim, max(dim // 2, 1))

    def collaborate(self, f_m_perp: Tensor, f_e_perp: Tensor) -> Tensor:
        """Eqs. 9-11: F_col as two tokens (B, 2, D) = [F_col,m, F_col,e]."""
        mix = torch.stack([f_m_perp, f_e_perp], dim=1)
        q, k, v = self.qkv(mix).chunk(3, dim=-1)
        return F.scaled_dot_product_attention(q, k, v)

    def forward(self, f_m_perp: Tensor, f_e_perp: Tensor) -> FusionOutput:
        col = self.collaborate(f_m_perp, f_e_perp)
        f_m = self.attn_m(f_m_perp.unsqueeze(1), col, col, need_weights=False)[0].squeeze(1)
        f_e = self.attn_e(f_e_perp.unsqueeze(1), col, col, need_weights=False)[0].squeeze(1)
        s_m, s_e = torch.sigmoid(self.gate_m(f_m)), torch.sigmoid(self.gate_e(f_e))
        w_m, w_e = s_m / (s_m + s_e), s_e / (s_m + s_e)
        return FusionOutput(w_m * f_m + w_e * f_e, w_m, w_e, f_m, f_e)


class WeightedSumFusion(nn.Module):
    """Table V No.3: F_fusion = softmax(learnable logits) weighted sum of F_m_perp, F_e_perp."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(2))

    def forward(self, f_m_perp: Tensor, f_e_perp: Tensor) -> FusionOutput:
        w = torch.softmax(self.logits, dim=0)
        w_m, w_e = (w[i].expand(f_m_perp.shape[0], 1) for i in range(2))
        return FusionOutput(w_m * f_m_perp + w_e * f_e_perp, w_m, w_e, f_m_perp, f_e_perp)
