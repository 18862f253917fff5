"""Face pipeline: frame checks, 68 landmarks, alignment and crop, onset→apex flow image, contact sheet."""

from .alignment import AlignmentSettings, align_clip, eye_centres
from .errors import BadFrame, FaceNotFound
from .flow_image import apex_flow_image, composite_flow_image, flow_to_rgb, optical_strain
from .landmarks import Landmarker, make_landmarker, require_face
from .preview import contact_sheet
from .quality import check_frame
from .video import read_video

__all__ = [
    "AlignmentSettings",
    "BadFrame",
    "FaceNotFound",
    "Landmarker",
    "align_clip",
    "apex_flow_image",
    "check_frame",
    "composite_flow_image",
    "contact_sheet",
    "eye_centres",
    "flow_to_rgb",
    "make_landmarker",
    "optical_strain",
    "read_video",
    "require_face",
]
