"""Multi-label AU detection loss (MEDN eq. 1)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def au_bce_loss(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """eq. 1: sum over AUs of per-AU binary cross-entropy, averaged over samples.

    ``logits``/``targets``: (B, N_AU), targets in {0, 1}. ``mask``: optional (B,) bool, True
    for samples that carry AU labels; others are excluded. With no labelled sample the result
    is ``logits.sum() * 0`` (zero, same dtype/device, still part of the graph).
    """
    if mask is not None:
        logits, targets = logits[mask], targets[mask]
    if logits.shape[0] == 0:
        return logits.sum() * 0
    per_au = F.binary_cross_entropy_with_logits(logits, targets.to(logits), reduction="none")
    return per_au.sum(dim=-1).mean()
