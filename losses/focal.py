"""Multiclass softmax focal loss (MEDN eq. 15; Lin et al., ICCV 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def focal_loss(
    logits: Tensor, target: Tensor, gamma: float = 2.0, alpha: Tensor | None = None
) -> Tensor:
    """Mean over samples of ``-alpha_t (1 - p_t)^gamma log p_t`` (eq. 15).

    ``logits``: (B, C); ``target``: (B,) class indices; ``alpha``: optional (C,) per-class
    weights. The mean is a plain mean over samples (not normalised by the sum of alphas), so
    with ``gamma=0`` and ``alpha=None`` it equals ``F.cross_entropy``.
    """
    log_p_t = F.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    loss = -((1.0 - log_p_t.exp()) ** gamma) * log_p_t
    if alpha is not None:
        loss = loss * alpha.to(loss)[target]
    return loss.mean()


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss`; ``alpha`` is kept as a buffer."""

    alpha: Tensor | None

    def __init__(self, gamma: float = 2.0, alpha: Sequence[float] | Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer(
            "alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(logits, target, self.gamma, self.alpha)
