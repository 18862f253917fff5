"""User-facing errors of the face pipeline (printed as one line by the CLI)."""

from __future__ import annotations

from datamodules.errors import MERError


class FaceNotFound(MERError):
    """No face was detected in a frame the pipeline needs (e.g. a clip's reference frame)."""


class BadFrame(MERError):
    """A frame is unreadable, empty or blank (near-constant)."""
