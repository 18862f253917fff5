"""Face + flow preparation of one clip of a real release (MEDN §IV-B, Xie et al. §IV-A, MEGC2019).

Per clip: read the frames that sampling needs, find the face and its 68 landmarks on the onset
frame, align every frame with that one similarity transform (or one per frame), crop to
`size`, sample T frames over onset→offset (or onset→apex), TV-L1 flow of each sampled frame
against the first, and the composite protocol's onset→apex u/v/strain image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from experiments.errors import MERError

from ..cache import PreparedClip
from ..face import AlignmentSettings, FaceNotFound, Landmarker, align_clip, apex_flow_image, check_frame, make_landmarker
from ..preprocessing import TVL1Settings, flow_sequence, interpolate_frames, nearest_sampled_index, to_gray
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
        apex_image_size: side of the onset→apex u/v/strain image (28 in the composite protocol).
    """

    num_frames: int = 8
    interval: Literal["offset", "apex"] = "offset"
    alignment: AlignmentSettings = field(default_factory=AlignmentSettings)
    landmarks: Literal["dlib", "face_alignment"] = "dlib"
    tvl1: TVL1Settings = field(default_factory=TVL1Settings)
    apex_image_size: int = 28

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        compact = np.searchsorted(numbers, np.floor(positions)) + (positions - np.floor(positions))
        sampled = interpolate_frames(crops, compact)
        gray = to_gray(sampled)
        flow = flow_sequence(gray, s.tvl1)
        apex_pos = self.apex_position(positions, flow, source.row.get("apex"))
        arrays = {
            "frames": np.ascontiguousarray(sampled.transpose(0, 3, 1, 2)),
            "flow": flow.astype(np.float16),
            "apex_image": apex_flow_image(gray[0], gray[apex_pos], s.apex_image_size, s.tvl1).transpose(2, 0, 1).copy(),
            "au": np.asarray(source.row[AU_COLUMN], dtype=np.uint8),
        }
        if crop_landmarks.ndim == 3:
            arrays["landmarks"] = interpolate_frames(crop_landmarks.astype(np.float32), compact)
        row = {k: v for k, v in source.row.items() if k != AU_COLUMN and not is_missing(v)}
        row.update(apex_pos=apex_pos, apex_estimated=is_missing(source.row.get("apex")))
        return row, arrays

    def find_landmarks(self, frames: np.ndarray, numbers: list[int], reference: int) -> np.ndarray:
        """Onset-frame landmarks (68, 2), or per-frame (L, 68, 2) when aligning every frame."""
        indices = range(len(frames)) if self.settings.alignment.per_frame else [reference]
        found = []
        for i in indices:
            points = self.landmarker(frames[i])
            if points is None:
                raise FaceNotFound(f"no face found in frame {numbers[i]}; check the frame, or skip such clips with on_error 'skip'")
            found.append(points)
        return np.stack(found) if self.settings.alignment.per_frame else found[0]

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
