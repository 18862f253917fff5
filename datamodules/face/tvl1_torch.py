"""Dual TV-L1 optical flow in PyTorch, batched, on any device: the algorithm of OpenCV's
``cv2.optflow.DualTVL1OpticalFlow`` with its defaults.

Zach, Pock & Bischof (DAGM 2007) "A duality based approach for realtime TV-L1 optical flow", as
detailed by Sánchez, Meinhardt-Llopis & Facciolo (IPOL 2013) "TV-L1 optical flow estimation":
minimise ∫ |∇u1| + |∇u2| + λ |ρ(u)| with ρ the data residual linearised around the current flow,
relaxed by an auxiliary field v (coupling (u - v)² / 2θ), alternating

* v = TH(u): the pointwise thresholding of IPOL eq. (18),
* u = v + θ div p (eq. 19),
* p = (p + τ/θ ∇u) / (1 + τ/θ |∇u|): the dual projection step (eq. 20, Chambolle's scheme),

inside a coarse-to-fine pyramid with several warps per scale (IPOL Algorithm 1).

Where the papers leave details open, OpenCV's implementation (opencv_contrib
modules/optflow/src/tvl1flow.cpp, read to learn it) is followed, because the suite's caches were
computed with it:

* grey levels on the 0..255 scale; the pyramid is built by repeated INTER_LINEAR resizing by
  `scale_step` (no presmoothing), sides rounded, scales smaller than 16 px dropped;
* the flow is upsampled by INTER_LINEAR resizing and multiplied by 1/scale_step;
* warping is bicubic (a = -0.75), taps outside the image read 0 (cv2.remap INTER_CUBIC,
  BORDER_CONSTANT); the image gradient is computed once per scale
  (centred differences, one-sided halves at the borders) and warped with the image;
* the dual variables restart from 0 at every scale and carry over between warps;
* per warp, up to `outer_iterations` rounds of a 5×5 median filter of the flow followed by up to
  `inner_iterations` primal-dual steps; both loops stop once the summed squared change of the
  flow in one step is ≤ epsilon² × pixels (the step that reaches it still updates p).

Every pair of a batch is computed independently: the stopping rule is applied per pair (a pair
that has converged is frozen while the others go on), so a pair's flow does not depend on its
batch. gamma (OpenCV's illumination term) is 0, OpenCV's default, and not implemented.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_SCALE_SIDE = 16  # OpenCV drops pyramid levels with a side below 16 px


@dataclass
class TVL1Work:
    """Work a `tvl1_flow` call did, summed over its pairs and pyramid levels (a benchmark's floor):
    pixels × primal-dual iterations, pixels × median filterings, pixels × warps."""

    iterations: int = 0
    medians: int = 0
    warps: int = 0


def tvl1_flow(
    first: Tensor,
    second: Tensor,
    *,
    tau: float = 0.25,
    lambda_: float = 0.15,
    theta: float = 0.3,
    nscales: int = 5,
    warps: int = 5,
    epsilon: float = 0.01,
    inner_iterations: int = 30,
    outer_iterations: int = 10,
    scale_step: float = 0.8,
    median_filtering: int = 5,
    work: TVL1Work | None = None,
) -> Tensor:
    """Flow from `first` to `second` (N, H, W) grey levels 0..255 -> (N, 2, H, W) float32 (u, v) in
    pixels, on the inputs' device, so that second(x + u, y + v) ≈ first(x, y).

    Parameters and defaults are OpenCV's (DualTVL1OpticalFlow_create); `work`, if given, is
    incremented by the work done by the pairs that had not yet converged.
    """
    if first.ndim != 3 or first.shape != second.shape:
        raise ValueError(f"need two (N, H, W) batches of one shape, got {tuple(first.shape)} and {tuple(second.shape)}")
    if min(first.shape[-2:]) < 3:
        raise ValueError(f"images of {tuple(first.shape[-2:])} px are too small for TV-L1 (need at least 3x3)")
    pyramid0 = image_pyramid(first.float(), nscales, scale_step)
    pyramid1 = image_pyramid(second.float(), nscales, scale_step)
    flow = first.new_zeros((first.shape[0], 2, *pyramid0[-1].shape[-2:]), dtype=torch.float32)
    solver = _Solver(tau=tau, lambda_=lambda_, theta=theta, warps=warps, epsilon=epsilon, inner=inner_iterations,
                     outer=outer_iterations, median=median_filtering, work=work if work is not None else TVL1Work())
    for level in reversed(range(len(pyramid0))):
        if flow.shape[-2:] != pyramid0[level].shape[-2:]:
            flow = resize_linear(flow, tuple(pyramid0[level].shape[-2:])) * (1.0 / scale_step)
        flow = solver.one_scale(pyramid0[level], pyramid1[level], flow)
    return flow


def image_pyramid(images: Tensor, nscales: int, scale_step: float) -> list[Tensor]:
    """[images, resized by scale_step, by scale_step², ...] (N, H, W) each, at most `nscales`
    levels, none with a side under 16 px (cv2.resize(..., fx=scale_step, fy=scale_step))."""
    levels = [images]
    for _ in range(1, nscales):
        height, width = levels[-1].shape[-2:]
        size = (round(height * scale_step), round(width * scale_step))
        if min(size) < MIN_SCALE_SIDE:
            break
        levels.append(resize_linear(levels[-1], size, 1.0 / scale_step))
    return levels


def resize_linear(images: Tensor, size: tuple[int, int], scale: float | None = None) -> Tensor:
    """OpenCV INTER_LINEAR resize of the last two axes to `size`: source coordinate
    (d + 0.5) · scale - 0.5 clamped to the image, scale = input/output side unless given."""
    height, width = images.shape[-2:]
    rows = _linear_taps(size[0], height, scale, images.device)
    cols = _linear_taps(size[1], width, scale, images.device)
    x0, x1, wx = cols
    images = images[..., x0] * (1 - wx) + images[..., x1] * wx
    y0, y1, wy = rows
    wy = wy[:, None]
    return images[..., y0, :] * (1 - wy) + images[..., y1, :] * wy


def _linear_taps(size_out: int, size_in: int, scale: float | None, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Left/right source indices and right weight of each output coordinate (as cv::resize)."""
    scale = 1.0 / (size_out / size_in) if scale is None else scale
    position = (torch.arange(size_out, dtype=torch.float64) + 0.5) * scale - 0.5
    position = position.float()
    left = position.floor()
    weight = position - left
    left = left.long()
    weight[left < 0] = 0.0
    left = left.clamp(min=0)
    weight[left >= size_in - 1] = 0.0
    left = left.clamp(max=size_in - 1)
    right = (left + 1).clamp(max=size_in - 1)
    return left.to(device), right.to(device), weight.to(device)


def centred_gradient(images: Tensor) -> tuple[Tensor, Tensor]:
    """(∂x, ∂y) of (N, H, W): ½ (f[i+1] - f[i-1]), at the borders ½ of the one-sided difference."""
    padded = F.pad(images[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    return 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]), 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])


def forward_gradient(field: Tensor, out: Tensor) -> Tensor:
    """∂x, ∂y of (N, C, H, W) into out (N, 2, C, H, W) by forward differences; out's last column
    (∂x) and last row (∂y) must hold 0 (IPOL eq. 24)."""
    torch.sub(field[..., :, 1:], field[..., :, :-1], out=out[:, 0, ..., :, :-1])
    torch.sub(field[..., 1:, :], field[..., :-1, :], out=out[:, 1, ..., :-1, :])
    return out


def divergence(p: Tensor) -> Tensor:
    """Backward-difference divergence of p (N, 2, C, H, W) = (p_x, p_y) -> (N, C, H, W), with p = 0
    before the first column / row: the negative adjoint of forward_gradient (IPOL eq. 25)."""
    div = p[:, 0] + p[:, 1]
    div[..., :, 1:] -= p[:, 0, ..., :, :-1]
    div[..., 1:, :] -= p[:, 1, ..., :-1, :]
    return div


def warp_bicubic(images: Tensor, flow: Tensor) -> Tensor:
    """images (N, C, H, W) sampled at (x + u, y + v): bicubic (a = -0.75), taps outside the image
    read 0 (cv2.remap INTER_CUBIC, BORDER_CONSTANT; OpenCV 5 interpolates float maps exactly)."""
    height, width = images.shape[-2:]
    ys = torch.arange(height, device=images.device, dtype=torch.float32)[:, None]
    xs = torch.arange(width, device=images.device, dtype=torch.float32)
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    grid = torch.stack((x * (2.0 / max(width - 1, 1)) - 1.0, y * (2.0 / max(height - 1, 1)) - 1.0), dim=-1)
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


def median_filter(field: Tensor, size: int) -> Tensor:
    """size×size median of each (H, W) plane of (N, C, H, W), borders replicated (cv2.medianBlur).

    A selection network of elementwise min/max over the size² shifted planes (exact: it picks the
    middle value), much faster than sorting the windows."""
    half = size // 2
    height, width = field.shape[-2:]
    padded = F.pad(field, (half, half, half, half), mode="replicate")
    values = [padded[..., i:i + height, j:j + width] for i in range(size) for j in range(size)]
    steps, result = selection_network(size * size)
    for a, b, keep_min, keep_max in steps:
        low = torch.minimum(values[a], values[b]) if keep_min else None
        high = torch.maximum(values[a], values[b]) if keep_max else None
        values[a], values[b] = low, high
    return values[result]


@functools.cache
def selection_network(count: int) -> tuple[list[tuple[int, int, bool, bool]], int]:
    """Compare-exchange steps (a, b, keep_min, keep_max) that move the median of `count` values
    (count odd) into slot `result`: Batcher's odd-even merge sort of the next power of two with
    the padding (+∞) wires folded away and every step not leading to the median dropped."""
    wires = 1 << (count - 1).bit_length()
    slot: list[int | None] = [*range(count), *([None] * (wires - count))]  # None: a +∞ padding wire
    steps = []
    for i, j in _batcher_comparators(wires):
        if slot[j] is None:
            continue  # min(x, +∞) = x stays on wire i
        if slot[i] is None:
            slot[i], slot[j] = slot[j], None  # the finite value moves to the lower wire
            continue
        steps.append((slot[i], slot[j]))
    result = slot[count // 2]
    needed, kept = {result}, []
    for a, b in reversed(steps):  # after step (a, b): slot a holds the min, slot b the max
        keep_min, keep_max = a in needed, b in needed
        if keep_min or keep_max:
            kept.append((a, b, keep_min, keep_max))
            needed |= {a, b}
    return kept[::-1], result


def _batcher_comparators(wires: int) -> list[tuple[int, int]]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort of `wires` = 2^k values."""
    pairs, span = [], 1
    while span < wires:
        gap = span
        while gap >= 1:
            for j in range(gap % span, wires - gap, 2 * gap):
                for i in range(min(gap, wires - j - gap)):
                    if (i + j) // (2 * span) == (i + j + gap) // (2 * span):
                        pairs.append((i + j, i + j + gap))
            gap //= 2
        span *= 2
    return pairs


class _Solver:
    """The per-scale TV-L1 iterations (IPOL Algorithm 1, inner part) for a batch."""

    def __init__(self, *, tau: float, lambda_: float, theta: float, warps: int, epsilon: float, inner: int, outer: int,
                 median: int, work: TVL1Work) -> None:
        self.work = work
        self.l_t = lambda_ * theta
        self.taut = tau / theta
        self.theta = theta
        self.warps, self.epsilon, self.inner, self.outer, self.median = warps, epsilon, inner, outer, median

    def one_scale(self, image0: Tensor, image1: Tensor, flow: Tensor) -> Tensor:
        """Refine `flow` (N, 2, H, W) between image0 and image1 (N, H, W) of one pyramid level."""
        pixels = image0.shape[-1] * image0.shape[-2]
        stop = self.epsilon**2 * pixels
        gx, gy = centred_gradient(image1)
        target = torch.stack((image1, gx, gy), dim=1)
        dual = flow.new_zeros((flow.shape[0], 2, *flow.shape[1:]))  # p: (x, y) components for u1 and u2
        flow_gradient = torch.zeros_like(dual)
        for _ in range(self.warps):
            self.work.warps += pixels * flow.shape[0]
            warped = warp_bicubic(target, flow)
            gradient = warped[:, 1:].contiguous()  # ∇I1(x + u0)
            grad_sq = gradient.square().sum(dim=1)
            # ρ(u) = I1(x + u0) + ∇I1·(u - u0) - I0 = rho_c + ∇I1·u
            rho_c = warped[:, 0] - (gradient * flow).sum(dim=1) - image0
            # -1/|∇I1|² where the gradient is not 0 (OpenCV leaves v = u there)
            neg_inv = torch.where(grad_sq > torch.finfo(torch.float32).eps, -1.0 / grad_sq, torch.zeros_like(grad_sq))
            error = torch.full((flow.shape[0],), float("inf"), device=flow.device)
            for _ in range(self.outer):
                active, count = self.still_iterating(error, stop)
                if count == 0:
                    break
                if self.median > 1:
                    self.work.medians += pixels * count
                    flow = _where(active, count, median_filter(flow, self.median), flow)
                for _ in range(self.inner):
                    active, count = self.still_iterating(error, stop)
                    if count == 0:
                        break
                    self.work.iterations += pixels * count
                    new_flow = self.primal_step(flow, dual, gradient, rho_c, neg_inv)
                    step = (new_flow - flow).square_().sum(dim=(1, 2, 3))
                    new_dual = self.dual_step(new_flow, dual, flow_gradient)
                    flow, dual = _where(active, count, new_flow, flow), _where(active, count, new_dual, dual)
                    error = torch.where(active, step, error)
        return flow

    @staticmethod
    def still_iterating(error: Tensor, stop: float) -> tuple[Tensor, int]:
        """Which pairs have not met the stopping rule, and how many (the one host sync of a step)."""
        active = error > stop
        return active, int(active.sum())

    def primal_step(self, flow: Tensor, dual: Tensor, gradient: Tensor, rho_c: Tensor, neg_inv: Tensor) -> Tensor:
        """v = TH(u) (IPOL eq. 18), then the new flow u = v + θ div p (eq. 19).

        TH moves u along ∇I1 by -ρ/|∇I1|² clipped to ±λθ, the three cases of eq. (18) in one."""
        rho = (gradient * flow).sum(dim=1).add_(rho_c)
        step = rho.mul_(neg_inv).clamp_(-self.l_t, self.l_t)
        return torch.addcmul(flow, gradient, step[:, None]).add_(divergence(dual), alpha=self.theta)

    def dual_step(self, flow: Tensor, dual: Tensor, flow_gradient: Tensor) -> Tensor:
        """p = (p + τ/θ ∇u) / (1 + τ/θ |∇u|) for each flow component (IPOL eq. 20)."""
        grad = forward_gradient(flow, flow_gradient)
        norm = (grad[:, 0] * grad[:, 0]).addcmul_(grad[:, 1], grad[:, 1]).sqrt_().mul_(self.taut).add_(1.0)
        return torch.add(dual, grad, alpha=self.taut).div_(norm[:, None])


def _where(active: Tensor, count: int, new: Tensor, old: Tensor) -> Tensor:
    """`new` for the `count` pairs still iterating, `old` for the converged ones (no copy when all iterate)."""
    if count == len(active):
        return new
    return torch.where(active.view(-1, *([1] * (new.ndim - 1))), new, old)
