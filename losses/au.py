"""Multi-label AU detection loss (MEDN eq. 1)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from losses.reduction import masked_mean


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
    return masked_mean(per_sample, mask)
