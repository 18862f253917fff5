"""Reading whole videos as RGB frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from datamodules.errors import MERError

from .quality import check_frame


def read_video(path: str | Path, step: int = 1) -> np.ndarray:
    """Every `step`-th frame of a video as (L, H, W, 3) uint8 RGB; blank frames raise BadFrame."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise MERError(f"cannot open video '{path}': missing file or unsupported codec")
    frames = []
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(cv2.cvtColor(check_frame(bgr, f"{index} of '{path}'"), cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        capture.release()
    if not frames:
        raise MERError(f"video '{path}' has no readable frame")
    return np.stack(frames)
