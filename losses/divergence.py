"""Divergence loss of the diverse attention operation (Xie et al. 2022, eqs. 2 and 6)."""

from __future__ import annotations

import torch
from torch import Tensor


def divergence_loss(maps: Tensor, detach_first: bool = True) -> Tensor:
    """eq. 6: ``-1/(T-1) sum_{k=2..T} 1/(k-1) sum_{l<k} DIV(M_k | M_l)``, averaged over the batch.

    ``maps``: (B, T, ...) non-negative attention maps summing to 1 over the trailing positions (the
    softmax maps of DAO), one per frame; M_1 is ``maps[:, 0]``, DAO's self-attention map (eq. 1).

    eq. 2: ``DIV(M_k | M_l) = 1 - sim(M_k, M_l)``. The paper's "dot-product similarity" is read as
    the authors' training scripts compute it (their ``DivRegLoss``, ``sqrt=True``): the dot product
    of the square roots of the maps, ``sim = sum_i sqrt(M_k[i] M_l[i])`` (the Bhattacharyya
    coefficient). Then DIV(M | M) = 0 for every map and DIV = 1 for maps with disjoint support, so
    the loss lies in [-1, 0]. The raw dot product of two softmax maps over H·W positions is about
    1/(H·W) for any pair: DIV ≈ 1 whatever the maps, and at MENet's 16×16 maps (batch 8, T = 8,
    N(0, 1) logits) the gradient w.r.t. the logits has norm 5e-5 against 5e-3 with the roots.

    ``detach_first`` (default, as the authors' ``DivRegLoss(detach=True)``): M_1 takes part as the
    reference of every pair but receives no gradient from this loss. M_1 is the parameter-free
    self-attention map, the channel mean of the backbone's features; a gradient through it would make
    the regulariser reshape the shared features of blocks 1-3 instead of steering the learned
    attention branches, which are what eq. 2 is meant to spread over other facial regions ("excavate
    different facial regions"). Pairs of learned branches (k, l >= 2) get the gradient on both sides,
    as in the authors' code. Needs T >= 2.
    """
    flat = maps.flatten(2)
    steps = flat.shape[1]
    if steps < 2:
        raise ValueError(f"the divergence loss needs at least 2 attention maps, got {steps}")
    # clamp: sqrt'(0) is infinite; a map entry that underflowed to 0 then gets a zero gradient
    roots = flat.clamp_min(torch.finfo(flat.dtype).tiny).sqrt()
    references = torch.cat([roots[:, :1].detach(), roots[:, 1:]], dim=1) if detach_first else roots
    similarity = roots @ references.transpose(1, 2)  # (B, T, T): sim(M_k, M_l), M_l as reference
    total = flat.new_zeros(flat.shape[0])
    for k in range(1, steps):
        total = total + (1 - similarity[:, k, :k]).mean(dim=1)
    return -(total / (steps - 1)).mean()
