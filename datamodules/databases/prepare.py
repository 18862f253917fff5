"""Face + flow preparation of one clip of a real release (MEDN §IV-B, Xie et al. §IV-A, MEGC2019).

Per clip: read the frames that sampling needs, find the face and its 68 landmarks on the onset
frame, align every frame with that one similarity transform (or one per frame), crop to
`size`, sample T frames over onset→offset (or onset→apex), TV-L1 flow of each sampled frame
against the first, and the composite protocol's onset→apex u/v/strain image (from the
sequence's onset→apex flow, not computed again).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from datamodules.errors import MERError

from ..cache import PreparedClip
from ..face import AlignmentSettings, Landmarker, align_clip, check_frame, composite_flow_image, make_landmarker, require_face
from ..preprocessing import FlowBackend, TVL1Settings, nearest_sampled_index, sample_clip
from .release_check import ClipSource, is_missing


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that determines a prepared clip (part of the cache key).

    Args:
        num_frames: T frames sampled per clip (MEDN: 8).
        interval: sample over onset→'offset' (MEDN) or onset→'apex'.
        alignment: crop size (144 MEDN, 256/128 Xie et al.) and per-frame or onset-frame alignment.
        landmarks: 'dlib' (offline default) or 'face_alignment' (optional, downloads weights).
        tvl1: TV-L1 parameters of the flow sequence and of the apex image.
        flow_backend: 'opencv' (cv2 DualTVL1) or 'torch' (its batched PyTorch port); left out of
            the key when 'opencv', so caches prepared before the option existed stay valid.
        apex_image_size: side of the onset→apex u/v/strain image (28 in the composite protocol).
    """

    num_frames: int = 8
    interval: Literal["offset", "apex"] = "offset"
    alignment: AlignmentSettings = field(default_factory=AlignmentSettings)
    landmarks: Literal["dlib", "face_alignment"] = "dlib"
    tvl1: TVL1Settings = field(default_factory=TVL1Settings)
    apex_image_size: int = 28
    flow_backend: FlowBackend = "opencv"

    def as_dict(self) -> dict[str, Any]:
        settings = asdict(self)
        if self.flow_backend == "opencv":
            del settings["flow_backend"]
        return settings


def read_frame(path: str) -> np.ndarray:
    """RGB uint8 frame; BadFrame (naming the file) when unreadable, empty or blank."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    image = check_frame(image, path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


AU_COLUMN = "au_multi_hot"
"""Column of the sample rows holding the AU multi-hot list (becomes the 'au' array)."""


class ReleaseClipPreparer:
    """Picklable per-clip function for the process pool (the landmarker loads lazily per process)."""

    def __init__(self, settings: PrepareSettings) -> None:
        self.settings = settings
        self.landmarker: Landmarker = make_landmarker(settings.landmarks)

    def __call__(self, source: ClipSource) -> PreparedClip:
        try:
            return self.prepare(source)
        except MERError as err:
            raise type(err)(f"{source.sample_id}: {err}") from err

    def prepare(self, source: ClipSource) -> PreparedClip:
        s = self.settings
        numbers = sorted(source.frames)
        frames = np.stack([read_frame(source.frames[n]) for n in numbers])
        onset = int(source.row["onset"])
        reference = numbers.index(onset)
        landmarks = self.find_landmarks(frames, numbers, reference)
        crops, crop_landmarks = align_clip(frames, landmarks, s.alignment, reference=reference)
        positions = np.asarray(source.positions)
        # the frames read are a subset: position p lies between numbers[k] = floor(p) and numbers[k + 1]
        compact = np.searchsorted(numbers, np.floor(positions)) + (positions - np.floor(positions))
        arrays = sample_clip(crops, crop_landmarks if crop_landmarks.ndim == 3 else None, compact, s.tvl1, s.flow_backend)
        apex_pos = self.apex_position(positions, arrays["flow"], source.row.get("apex"))
        # the onset→apex flow is already in the sequence: flow[apex_pos - 1]
        arrays["apex_image"] = composite_flow_image(arrays["flow"][apex_pos - 1], s.apex_image_size).transpose(2, 0, 1).copy()
        arrays["au"] = np.asarray(source.row[AU_COLUMN], dtype=np.uint8)
        row = {k: v for k, v in source.row.items() if k != AU_COLUMN and not is_missing(v)}
        row.update(apex_pos=apex_pos, apex_estimated=is_missing(source.row.get("apex")))
        return row, arrays

    def find_landmarks(self, frames: np.ndarray, numbers: list[int], reference: int) -> np.ndarray:
        """Onset-frame landmarks (68, 2), or per-frame (L, 68, 2) when aligning every frame."""
        if not self.settings.alignment.per_frame:
            return require_face(self.landmarker, frames[reference], f"frame {numbers[reference]}")
        return np.stack([require_face(self.landmarker, frame, f"frame {n}") for frame, n in zip(frames, numbers)])

    @staticmethod
    def apex_position(positions: np.ndarray, flow: np.ndarray, apex: Any) -> int:
        """Sampled frame nearest the annotated apex; with no apex, the frame of largest mean flow.

        The second rule is our choice for sheets with an unknown apex ('/'), recorded per clip
        as apex_estimated in the index.
        """
        if not is_missing(apex):
            return nearest_sampled_index(positions, int(apex))
        magnitude = np.sqrt((flow.astype(np.float32) ** 2).sum(axis=1)).mean(axis=(1, 2))
        return int(np.argmax(magnitude)) + 1
