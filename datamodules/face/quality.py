"""Checks that reject unusable frames before face detection sees them."""

from __future__ import annotations

import numpy as np

from .errors import BadFrame

BLANK_STD = 2.0
"""Frames whose grey-level standard deviation is below this are blank (black, white, one colour)."""


def check_frame(image: np.ndarray | None, source: str) -> np.ndarray:
    """Return `image` if usable; raise BadFrame naming `source` if None (unreadable), empty or blank."""
    if image is None:
        raise BadFrame(f"cannot read frame {source}: the file is missing, corrupt or not an image; "
                       "replace it or drop the sample")
    if image.size == 0:
        raise BadFrame(f"frame {source} is empty (shape {image.shape}); replace it or drop the sample")
    std = float(image.std())
    if std < BLANK_STD:
        raise BadFrame(f"frame {source} is blank (pixel std {std:.2f} < {BLANK_STD}); "
                       "check the file (black/white frame, failed export) or drop the sample")
    return image
