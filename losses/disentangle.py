"""Losses of identity/motion disentanglement (LFD-TCMEN's orthogonality and consistency terms)."""

from __future__ import annotations

from torch import Tensor


def cross_correlation_loss(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """Soft subspace orthogonality of two codes over a batch: the mean over every pair of
    dimensions (i of ``a``, j of ``b``) of their squared Pearson correlation across the N rows.

    ``a``: (N, D_a), ``b``: (N, D_b), N >= 2. In [0, 1]; 0 when every dimension of one code is
    linearly uncorrelated with every dimension of the other (the batch-centred form of the
    difference loss of Bousmalis et al., NeurIPS 2016). A constant dimension has correlation 0
    (``eps`` keeps its zero variance from dividing by 0).
    """
    a = a - a.mean(dim=0, keepdim=True)
    b = b - b.mean(dim=0, keepdim=True)
    a = a / (a.norm(dim=0, keepdim=True) + eps)
    b = b / (b.norm(dim=0, keepdim=True) + eps)
    return (a.transpose(0, 1) @ b).pow(2).mean()


def consistency_loss(identity_codes: Tensor, onset_motion: Tensor) -> Tensor:
    """Identity codes of one clip agree, and the onset's motion code is zero.

    ``identity_codes``: (B, T, D), one code per frame; ``onset_motion``: (B, D'). The sum of the
    mean squared deviation of each frame's identity code from its clip's mean code and the mean
    square of the onset motion code (both means over every element).
    """
    spread = (identity_codes - identity_codes.mean(dim=1, keepdim=True)).pow(2).mean()
    return spread + onset_motion.pow(2).mean()
