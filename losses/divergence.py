"""Divergence loss of the diverse attention operation (Xie et al. 2022, eqs. 2 and 6)."""

from __future__ import annotations

from torch import Tensor


def divergence_loss(maps: Tensor) -> Tensor:
    """eq. 6: ``-1/(T-1) sum_{k=2..T} 1/(k-1) sum_{l<k} DIV(M_k | M_l)``, averaged over the batch.

    ``maps``: (B, T, ...) attention maps, one per frame (any trailing shape; flattened).
    eq. 2: ``DIV(M_k | M_l) = 1 - sim(M_k, M_l)`` with the dot-product similarity (the paper's
    choice, after Wang et al. 2018). The loss lies in [-1, 0] for softmax maps; minimising it drives
    the maps apart. Needs T >= 2.
    """
    flat = maps.flatten(2)
    steps = flat.shape[1]
    if steps < 2:
        raise ValueError(f"the divergence loss needs at least 2 attention maps, got {steps}")
    similarity = flat @ flat.transpose(1, 2)  # (B, T, T): sim(M_k, M_l)
    total = flat.new_zeros(flat.shape[0])
    for k in range(1, steps):
        total = total + (1 - similarity[:, k, :k]).mean(dim=1)
    return -(total / (steps - 1)).mean()
