"""LED motion branch (Varanka et al., SCIA 2023), used by MEDN §III-A / Table VII."""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EulerianDynamics(nn.Module):
    """Learnable linear Eulerian filter along time.

    Three positive scalars stored as logs (alpha=10, r1=0.4, r2=0.05 at init) build a T x T
    upper-triangular matrix W (see :meth:`matrix`). For x of shape (B, C, T, H, W):
    ``out[:, :, t] = sum_i W[i, t] x[:, :, i] / (sum_i |W[i, t]| x[:, :, i] + 1)``, and frame 0
    of the output is the input frame 0.
    """

    def __init__(self, alpha: float = 10.0, r1: float = 0.4, r2: float = 0.05):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha)))
        self.log_r1 = nn.Parameter(torch.tensor(math.log(r1)))
        self.log_r2 = nn.Parameter(torch.tensor(math.log(r2)))

    def matrix(self, num_frames: int) -> Tensor:
        """W[i, j] = a(1-r1)^(j-i) r1^min(1,i) - a(1-r2)^(j-i) r2^min(1,i) for j > i,
        a(r1 - r2) for j == i, 0 for j < i."""
        alpha, r1, r2 = self.log_alpha.exp(), self.log_r1.exp(), self.log_r2.exp()
        idx = torch.arange(num_frames, device=alpha.device, dtype=alpha.dtype)
        i, j = idx[:, None], idx[None, :]
        lag, b = (j - i).clamp(min=0), i.clamp(max=1)
        upper = alpha * (1 - r1) ** lag * r1**b - alpha * (1 - r2) ** lag * r2**b
        diag = (alpha * (r1 - r2)).expand(num_frames, num_frames)
        zero = torch.zeros_like(upper)
        return torch.where(j > i, upper, torch.where(j == i, diag, zero))

    def forward(self, x: Tensor) -> Tensor:
        w = self.matrix(x.shape[2]).to(x.dtype)
        out = torch.einsum("bcthw,tu->bcuhw", x, w)
        out = out / (torch.einsum("bcthw,tu->bcuhw", x, w.abs()) + 1)
        return torch.cat([x[:, :, :1], out[:, :, 1:]], dim=2)


class LEDMotionEncoder(nn.Module):
    """RGB clip (B, T, 3, H, W) in [0, 1] -> motion feature F_m (B, feature_dim).

    Frames are converted to grayscale, resized to ``size`` x ``size`` and scaled by
    ``pixel_scale`` (the reference feeds 0-255 pixel values, the scale the ``+1`` stabiliser of
    :class:`EulerianDynamics` assumes). Frames 1..T-1 of the LED output go through the shallow
    3D AU network: Conv3d(1->32, (1,5,5)) + ReLU, MaxPool(1,3,3), BN, Dropout3d;
    Conv3d(32->64, (2,3,3)) + ReLU, MaxPool(2,2,2), BN, Dropout3d; FC + ReLU.
    The multi-label AU head is left to the caller.
    """

    def __init__(
        self,
        num_frames: int = 8,
        feature_dim: int = 256,
        size: int = 64,
        dropout: float = 0.5,
        pixel_scale: float = 255.0,
    ):
        super().__init__()
        out_t, out_hw = (num_frames - 2) // 2, ((size - 4) // 3 - 2) // 2
        if out_t < 1 or out_hw < 1:
            raise ValueError(f"LED needs >= 4 frames and size >= 21, got {num_frames=}, {size=}")
        self.num_frames, self.size, self.pixel_scale = num_frames, size, pixel_scale
        self.led = EulerianDynamics()
        self.features = nn.Sequential(
            nn.Conv3d(1, 32, (1, 5, 5)),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3)),
            nn.BatchNorm3d(32),
            nn.Dropout3d(dropout),
            nn.Conv3d(32, 64, (2, 3, 3)),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((2, 2, 2)),
            nn.BatchNorm3d(64),
            nn.Dropout3d(dropout),
        )
        self.fc = nn.Linear(64 * out_t * out_hw**2, feature_dim)

    def preprocess(self, frames: Tensor) -> Tensor:
        """(B, T, 3, H, W) in [0, 1] -> (B, 1, T, size, size) grayscale scaled to pixel_scale."""
        b, t = frames.shape[:2]
        gray = kornia.color.rgb_to_grayscale(frames.flatten(0, 1))
        gray = F.interpolate(gray, size=(self.size, self.size), mode="bilinear", antialias=True)
        return (gray * self.pixel_scale).view(b, t, 1, self.size, self.size).transpose(1, 2)

    def forward(self, frames: Tensor) -> Tensor:
        if frames.shape[1] != self.num_frames:
            raise ValueError(f"LED expects {self.num_frames} frames, got {frames.shape[1]}")
        x = self.led(self.preprocess(frames))[:, :, 1:]
        return F.relu(self.fc(self.features(x).flatten(1)))
