"""Mutual Information Neural Estimation (Belghazi et al., ICML 2018), as used by Xie et al. 2022 (eq. 3).

The statistics network T(x, z) is trained to MAXIMISE the Donsker-Varadhan (DV) lower bound

    I(X; Z) >= E_joint[T(x, z)] - log E_marginal[exp T(x, z')],

the product of marginals being formed by pairing each x with a z' shuffled across the batch.
Xie et al.'s eq. 3 writes the first expectation under the product of marginals too; that is a
misprint (the bound would be <= 0): the first term is over the joint, as in Belghazi et al.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class MINE(nn.Module):
    """Statistics network of Xie et al. Table 3 and its DV bound with the bias-corrected gradient.

    Table 3: concatenate (x, z) -> FC(hidden=64) -> LeakyReLU -> FC(1) -> LeakyReLU.
    (Table 3 lists 512 for the concatenation; the sizes are arguments here.)

    ``forward(x, z)`` returns the DV estimate in nats; its value is always the plain minibatch
    bound. In training mode its gradient is Belghazi et al.'s bias-corrected one: the gradient of
    log E_marginal[e^T] is replaced by grad E_marginal[e^T] / (moving average of E_marginal[e^T]),
    the moving average (rate ``ema_rate``) being the buffer ``log_ema`` (kept as its log for
    stability, saved in checkpoints; NaN until the first training batch, which initialises it). In
    eval mode the gradient is the plain one and the buffer is untouched.

    Args:
        x_dim: width of the first input.
        z_dim: width of the second input.
        hidden: width of the hidden layer (64 in Table 3).
        ema_rate: rate of the moving average (0.01 as in Belghazi et al.).
        negative_slope: slope of the LeakyReLUs (PyTorch's default; the paper gives none).
    """

    log_ema: Tensor

    def __init__(self, x_dim: int, z_dim: int, hidden: int = 64, ema_rate: float = 0.01, negative_slope: float = 0.01):
        super().__init__()
        self.statistics = nn.Sequential(
            nn.Linear(x_dim + z_dim, hidden),
            nn.LeakyReLU(negative_slope),
            nn.Linear(hidden, 1),
            nn.LeakyReLU(negative_slope),
        )
        self.ema_rate = ema_rate
        self.register_buffer("log_ema", torch.tensor(float("nan")))

    def scores(self, x: Tensor, z: Tensor) -> Tensor:
        """T(x, z) per sample, shape (B,)."""
        return self.statistics(torch.cat([x, z], dim=-1)).squeeze(-1)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """DV lower bound on I(X; Z) in nats for a batch of pairs x (B, x_dim), z (B, z_dim)."""
        joint = self.scores(x, z).mean()
        shuffled = z[torch.randperm(len(z), device=z.device)]
        marginal = self.scores(x, shuffled)
        log_mean_exp = torch.logsumexp(marginal, dim=0) - math.log(len(marginal))
        if not (self.training and torch.is_grad_enabled()):
            return joint - log_mean_exp
        self._update_ema(log_mean_exp.detach())
        # Value: log_mean_exp. Gradient: grad(mean e^T) / ema (Belghazi et al. §3.2).
        ratio = torch.exp(log_mean_exp - self.log_ema)
        return joint - (log_mean_exp.detach() + ratio - ratio.detach())

    @torch.no_grad()
    def _update_ema(self, log_mean_exp: Tensor) -> None:
        """The first batch (buffer NaN) sets the average; chosen on the device, no host sync."""
        decayed = self.log_ema + math.log1p(-self.ema_rate)
        updated = torch.logaddexp(decayed, log_mean_exp + math.log(self.ema_rate))
        self.log_ema.copy_(torch.where(torch.isnan(self.log_ema), log_mean_exp, updated))


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


def scale_gradient(x: Tensor, factor: float) -> Tensor:
    """Identity forward; multiplies the gradient by ``factor`` on the way back.

    With a negative factor this is a gradient-reversal layer: in ``-mine(scale_gradient(f, -λ), g)``
    the statistics network descends -DV (maximises the bound) while the encoder producing ``f``
    descends +λ·DV (minimises the estimated mutual information), in one backward pass.
    """
    return _ScaleGradient.apply(x, factor)
