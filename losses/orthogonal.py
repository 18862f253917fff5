"""Orthogonal decoupling of motion and emotion features (MEDN eqs. 5-8)."""

from __future__ import annotations

from torch import Tensor


def orthogonal_components(f_m: Tensor, f_e: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Return ``(F_m_perp, F_e_perp)`` for features of shape (B, D).

    eq. 5: ``F_hat = F / (||F||_2 + eps)``; eq. 6: ``alpha = <F_hat_m, F_hat_e>`` per sample;
    eq. 7: ``F_m_perp = F_hat_m - alpha F_hat_e``, ``F_e_perp = F_hat_e - alpha F_hat_m``.
    """
    f_m_hat = f_m / (f_m.norm(dim=-1, keepdim=True) + eps)
    f_e_hat = f_e / (f_e.norm(dim=-1, keepdim=True) + eps)
    alpha = (f_m_hat * f_e_hat).sum(dim=-1, keepdim=True)
    return f_m_hat - alpha * f_e_hat, f_e_hat - alpha * f_m_hat


def orthogonal_loss(f_m_perp: Tensor, f_e_perp: Tensor) -> Tensor:
    """eq. 8: ``D * <F_m_perp, F_e_perp>^2`` per sample, averaged over the batch.

    Note: with unit inputs, ``<F_m_perp, F_e_perp> = alpha^3 - alpha``, so eq. 8 is zero for
    alpha in {-1, 0, 1}; this is the paper's formula as written.
    """
    return (f_m_perp.shape[-1] * (f_m_perp * f_e_perp).sum(dim=-1).pow(2)).mean()
