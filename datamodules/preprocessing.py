"""Clip preprocessing shared by every clip dataset (MEDN §IV-B).

A clip becomes T frames sampled uniformly over its onset→offset interval (linear interpolation
between neighbouring frames, so short clips are stretched), and a TV-L1 optical-flow sequence of
every sampled frame against the first one: (T-1, 2, H, W), computed by OpenCV's Dual TV-L1
(backend 'opencv') or by its batched PyTorch port datamodules/face/tvl1_torch.py ('torch').
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np
import torch

FlowBackend = Literal["opencv", "torch"]
FLOW_BACKENDS: tuple[str, ...] = ("opencv", "torch")


@dataclass(frozen=True)
class TVL1Settings:
    """Parameters of OpenCV's Dual TV-L1 (defaults are OpenCV's)."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01

    def create(self) -> cv2.optflow.DualTVL1OpticalFlow:
        return cv2.optflow.DualTVL1OpticalFlow_create(**asdict(self))


def sample_positions(start: int, stop: int, num_frames: int) -> np.ndarray:
    """`num_frames` fractional frame positions spread evenly over [start, stop] (both included)."""
    if stop < start:
        raise ValueError(f"interval end {stop} is before its start {start}")
    return np.linspace(start, stop, num_frames)


def interpolate_frames(frames: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Frames at fractional `positions`, linearly blended from their two neighbours.

    Works for any trailing shape (images, landmarks); the result keeps `frames.dtype`.
    """
    lo = np.floor(positions).astype(int)
    hi = np.minimum(lo + 1, len(frames) - 1)
    w = (positions - lo).reshape(-1, *([1] * (frames.ndim - 1)))
    out = (1.0 - w) * frames[lo].astype(np.float32) + w * frames[hi].astype(np.float32)
    if np.issubdtype(frames.dtype, np.integer):
        out = np.rint(out)
    return out.astype(frames.dtype)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) RGB uint8 -> (T, H, W) grayscale uint8."""
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])


def flow_sequence(gray: np.ndarray, settings: TVL1Settings = TVL1Settings(), backend: FlowBackend = "opencv") -> np.ndarray:
    """TV-L1 flow of each frame against the first: (T, H, W) uint8 -> (T-1, 2, H, W) float32.

    backend 'opencv': cv2's DualTVL1, one pair after another; 'torch': all T-1 pairs in one batched
    call of the PyTorch port, on the GPU when there is one (our choice), else on the CPU."""
    if backend not in FLOW_BACKENDS:
        raise ValueError(f"unknown flow backend '{backend}'; choose one of {FLOW_BACKENDS}")
    if backend == "torch":
        return torch_flow_sequence(gray, settings)
    tvl1 = settings.create()
    flows = [tvl1.calc(gray[0], frame, None) for frame in gray[1:]]
    return np.stack(flows).transpose(0, 3, 1, 2).astype(np.float32)


def torch_flow_sequence(gray: np.ndarray, settings: TVL1Settings = TVL1Settings()) -> np.ndarray:
    """`flow_sequence` by datamodules/face/tvl1_torch.py: the T-1 pairs as one batch."""
    from datamodules.face.tvl1_torch import tvl1_flow  # datamodules.face imports this module

    device = "cuda" if torch.cuda.is_available() else "cpu"
    frames = torch.from_numpy(np.ascontiguousarray(gray)).to(device=device, dtype=torch.float32)
    flow = tvl1_flow(frames[:1].expand(len(frames) - 1, -1, -1), frames[1:], **asdict(settings))
    return flow.cpu().numpy()


def nearest_sampled_index(positions: np.ndarray, frame: int) -> int:
    """Index (>= 1) of the sampled frame closest to `frame`, e.g. the apex among the flow targets."""
    return int(np.argmin(np.abs(positions[1:] - frame))) + 1


def sample_clip(
    frames: np.ndarray,
    landmarks: np.ndarray | None,
    positions: np.ndarray,
    tvl1: TVL1Settings = TVL1Settings(),
    flow_backend: FlowBackend = "opencv",
) -> dict[str, np.ndarray]:
    """Frames at fractional `positions` (indices into `frames`) and their flow sequence (by `flow_backend`).

    Args:
        frames: (L, H, W, 3) uint8 RGB face crops.
        landmarks: optional (L, 68, 2) landmarks, sampled like the frames.
    Returns:
        'frames' (T, 3, H, W) uint8, 'flow' (T-1, 2, H, W) float16 and, if given, 'landmarks'
        (T, 68, 2) float32.
    """
    sampled = interpolate_frames(frames, positions)
    arrays = {
        "frames": np.ascontiguousarray(sampled.transpose(0, 3, 1, 2)),
        "flow": flow_sequence(to_gray(sampled), tvl1, flow_backend).astype(np.float16),
    }
    if landmarks is not None:
        arrays["landmarks"] = interpolate_frames(landmarks.astype(np.float32), positions)
    return arrays


def prepare_clip(
    frames: np.ndarray,
    landmarks: np.ndarray | None,
    onset: int,
    apex: int,
    offset: int,
    num_frames: int,
    tvl1: TVL1Settings = TVL1Settings(),
    flow_backend: FlowBackend = "opencv",
) -> tuple[dict[str, np.ndarray], int]:
    """Sample `num_frames` over onset→offset of a whole clip (frame i = frames[i]) and its flow:
    the arrays of `sample_clip` and the position (1..T-1) of the sampled frame nearest the apex,
    i.e. which flow is the onset→apex flow."""
    positions = sample_positions(onset, offset, num_frames)
    return sample_clip(frames, landmarks, positions, tvl1, flow_backend), nearest_sampled_index(positions, apex)
