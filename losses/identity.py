"""Subject-identity cross-entropy over the items that carry a training identity."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from losses.reduction import masked_mean


def identity_cross_entropy(logits: Tensor, identity: Tensor) -> Tensor:
    """Cross-entropy of subject ``logits`` (B, S) over the items with an identity class (>= 0);
    items marked -1 (evaluation items, unknown subjects) never reach the loss. 0 when no item has one."""
    per_item = F.cross_entropy(logits, identity.clamp(min=0), reduction="none")
    return masked_mean(per_item, identity >= 0)
