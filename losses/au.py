"""Multi-label AU detection loss (MEDN eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def au_bce_loss(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """eq. 1: sum over AUs of per-AU binary cross-entropy, averaged over samples.

    ``logits``/``targets``: (B, N_AU), targets in {0, 1}. ``mask``: optional (B,) bool, True
    for samples that carry AU labels; others are excluded. With no labelled sample the result
    is zero (same dtype/device, still part of the graph). A masked mean, not boolean indexing: no
    data-dependent shape, so no host synchronisation and it works under ``torch.vmap``.
    """
    per_sample = F.binary_cross_entropy_with_logits(logits, targets.to(logits), reduction="none").sum(dim=-1)
    if mask is None:
        return per_sample.mean()
    kept = torch.where(mask, per_sample, torch.zeros_like(per_sample))  # where, not *: an excluded NaN stays out
    return kept.sum() / mask.sum().clamp(min=1).to(per_sample)
