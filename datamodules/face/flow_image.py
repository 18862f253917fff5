"""Optical strain, the onset→apex composite flow image (MEGC2019 CDE / STSTNet input) and an HSV
flow visualisation."""

from __future__ import annotations

import cv2
import numpy as np

from datamodules.preprocessing import TVL1Settings, flow_sequence


def optical_strain(flow: np.ndarray) -> np.ndarray:
    """Optical strain magnitude of a (2, H, W) flow (u, v) -> (H, W) float32.

    Liong et al. (Off-ApexNet 2019, STSTNet 2019): the infinitesimal strain tensor of the flow,
    e_xx = ∂u/∂x, e_yy = ∂v/∂y, e_xy = e_yx = ½(∂u/∂y + ∂v/∂x), and its magnitude
    ε = sqrt(e_xx² + e_yy² + e_xy² + e_yx²). Derivatives are central differences (one-sided at the
    borders), in pixels.
    """
    u, v = flow.astype(np.float64)
    du_dy, du_dx = np.gradient(u)
    dv_dy, dv_dx = np.gradient(v)
    shear = 0.5 * (du_dy + dv_dx)
    return np.sqrt(du_dx**2 + dv_dy**2 + 2.0 * shear**2).astype(np.float32)


def minmax_uint8(channel: np.ndarray) -> np.ndarray:
    """Linearly rescale a channel to span 0-255 (all zeros if it is constant)."""
    lo, hi = float(channel.min()), float(channel.max())
    if hi - lo < 1e-12:
        return np.zeros(channel.shape, np.uint8)
    return np.rint((channel - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def apex_flow_image(
    onset_gray: np.ndarray, apex_gray: np.ndarray, size: int = 28, tvl1: TVL1Settings = TVL1Settings()
) -> np.ndarray:
    """The composite input of STSTNet / MEGC2019 CDE: (size, size, 3) uint8, channels (u, v, strain).

    TV-L1 flow onset→apex and its optical strain at full resolution; each channel is resized to
    size×size (INTER_AREA), then min-max normalised to 0-255. Normalising after resizing is what
    the public CDE images show: every channel of all 442 files spans exactly 0..255.

    Channel order: the public CDE PNGs store (u, v, strain) as (R, G, B), so cv2.imread gives
    (strain, v, u); ``apex_flow_image(...)[..., ::-1]`` matches an OpenCV-read CDE image.
    """
    if onset_gray.ndim != 2 or onset_gray.shape != apex_gray.shape:
        raise ValueError(f"need two grey images of one shape, got {onset_gray.shape} and {apex_gray.shape}")
    return composite_flow_image(flow_sequence(np.stack([onset_gray, apex_gray]), tvl1)[0], size)


def composite_flow_image(flow: np.ndarray, size: int = 28) -> np.ndarray:
    """`apex_flow_image` of an already computed onset→apex (2, H, W) flow."""
    flow = flow.astype(np.float32)
    channels = (flow[0], flow[1], optical_strain(flow))
    return np.dstack([minmax_uint8(cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)) for c in channels])


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """HSV rendering of a (2, H, W) flow as (H, W, 3) uint8 RGB: hue = direction, value = magnitude.

    Magnitudes are divided by `max_magnitude` (default: this flow's own maximum); pass one value
    for a whole sequence to make its images comparable.
    """
    magnitude, angle = cv2.cartToPolar(flow[0].astype(np.float32), flow[1].astype(np.float32), angleInDegrees=True)
    scale = max_magnitude if max_magnitude is not None else float(magnitude.max())
    hsv = np.empty((*magnitude.shape, 3), np.uint8)
    hsv[..., 0] = np.rint(angle / 2).astype(np.uint8) % 180  # OpenCV hue range is 0-179
    hsv[..., 1] = 255
    hsv[..., 2] = np.rint(np.clip(magnitude / max(scale, 1e-6), 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
