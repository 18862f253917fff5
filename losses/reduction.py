"""Reductions shared by the losses."""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of `values` (B,) over the items where `keep` (B,) is true; 0 (in the graph) when none is.

    ``torch.where``, not indexing or multiplying: no data-dependent shape (no host sync, works under
    ``torch.vmap``), and a non-finite value of a dropped item never reaches the result or its gradient."""
    kept = torch.where(keep, values, torch.zeros_like(values))
    return kept.sum() / keep.sum().clamp(min=1).to(values.dtype)
