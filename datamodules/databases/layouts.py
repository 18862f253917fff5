"""Where each official release keeps its frames, and what a release folder on disk holds.

A layout is a path pattern relative to the release root, with the sample's columns as fields
(``{subject}``, ``{clip}``, ``{emotion_raw}``, ...) and ``{frame}`` (with an optional format
spec such as ``{frame:05d}``) in the file name only. Frame numbers are those of the annotation
sheet (Onset/Apex/OffsetFrame). A user overrides the pattern from config
(``frame_pattern``) when a copy is organised differently. See docs/data.md, "Frame layouts".
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamodules.errors import MERError

RELEASE_LAYOUTS: dict[str, dict[str, str]] = {
    # CASME II: root = the folder holding sub01..sub26 (Cropped/ of the cropped release, or
    # CASME2_RAW_selected/); frame numbers unpadded, equal to the sheet's.
    "casme2": {
        "cropped": "{subject}/{clip}/reg_img{frame}.jpg",
        "raw": "{subject}/{clip}/img{frame}.jpg",
    },
    # SAMM (and SAMM_CROP): root = the folder holding 006..037; '<subject>_<frame>.jpg', frame
    # numbers as in the sheet (5 digits in most copies, 4 in some: listing accepts both).
    "samm": {
        "original": "{subject}/{clip}/{subject}_{frame:05d}.jpg",
    },
    # SMIC-HS: root = HS/ of SMIC_all_raw or SMIC_all_cropped (s1..s20 unpadded,
    # micro/<class>/<clip>); 'hs_e' = the long-video re-release the MEGC sheets reference
    # (HS_long/SMIC_HS_E/, subjects s01..s20). Frame numbers are the camera's absolute counters.
    "smic": {
        "raw": "s{subject_number}/micro/{emotion}/{clip}/image{frame:06d}.bmp",
        "cropped": "s{subject_number}/micro/{emotion}/{clip}/reg_image{frame:06d}.bmp",
        "hs_e": "{subject}/{clip}/image{frame:06d}.jpg",
    },
    # CAS(ME)^3 Part A: root = part_A/ (spNO.1, ...); one folder per task video (a..m), colour
    # frames 0-based and unpadded, as in the sheet (several ME clips per video).
    "casme3": {
        "original": "{subject}/{clip}/color/{frame}.jpg",
    },
    # DFME (CCAC 2024 public subset): root = the folder holding one folder per clip
    # (sub0003_01, ...), frames 00000.png, 0-based, as in the sheet.
    "dfme": {
        "original": "{clip}/{frame:05d}.png",
    },
    # MMEW: root = Micro_Expression/ (one folder per emotion, then per clip), frames unpadded.
    "mmew": {
        "original": "{emotion}/{clip}/{frame}.jpg",
    },
}


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

VIDEO_FOLDERS = {"casme3"}
"""Databases whose folders hold a whole recording with several clips (not one clip per folder)."""


def release_pattern(dataset: str, release: str | None, frame_pattern: str | None) -> str:
    """The frame pattern to use: an explicit `frame_pattern`, else the named (or first) release."""
    if frame_pattern:
        return frame_pattern
    layouts = RELEASE_LAYOUTS[dataset]
    name = release or next(iter(layouts))
    if name not in layouts:
        raise MERError(f"unknown release '{name}' for {dataset}; choose one of {sorted(layouts)} or set frame_pattern")
    return layouts[name]


@dataclass(frozen=True)
class FrameLayout:
    """A frame pattern bound to a release root: frame paths and frame listings of one clip."""

    root: Path
    pattern: str
    one_clip_per_folder: bool = True
    """False when a folder holds a whole recording (then its last frame is not a clip's offset)."""

    def __post_init__(self) -> None:
        directory, _, name = self.pattern.rpartition("/")
        fields = {f for _, f, _, _ in string.Formatter().parse(self.pattern) if f}
        if "frame" not in fields or "frame" in {f for _, f, _, _ in string.Formatter().parse(directory) if f}:
            raise MERError(f"frame pattern '{self.pattern}' must contain {{frame}} in its file name part, e.g. '{{subject}}/{{clip}}/img{{frame}}.jpg'")

    def clip_dir(self, sample: dict[str, Any]) -> Path:
        directory, _, _ = self.pattern.rpartition("/")
        return self.root / self._format(directory, sample)

    def list_frames(self, sample: dict[str, Any]) -> dict[int, Path]:
        """Frame number -> path of every file in the clip folder that matches the pattern."""
        directory = self.clip_dir(sample)
        regex = self._name_regex(sample)
        found: dict[int, Path] = {}
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return found
        preferred = Path(self.pattern).suffix.lower()
        with entries:
            for entry in entries:
                match = regex.fullmatch(entry.name)
                if match and (int(match.group(1)) not in found or Path(entry.name).suffix.lower() == preferred):
                    found[int(match.group(1))] = Path(entry.path)
        return found

    def _name_regex(self, sample: dict[str, Any]) -> re.Pattern[str]:
        _, _, name = self.pattern.rpartition("/")
        parts = []
        for literal, field, spec, conversion in string.Formatter().parse(name):
            parts.append(re.escape(literal))
            if field == "frame":
                parts.append(r"(\d+)")
            elif field:
                parts.append(re.escape(self._format("{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}", sample)))
        regex = "".join(parts)
        # a copy converted to another image format still matches (the pattern's format wins a tie)
        extension = re.escape(Path(name).suffix)
        if extension and Path(name).suffix.lower() in IMAGE_EXTENSIONS and regex.endswith(extension):
            regex = regex[: -len(extension)] + r"\.(?:" + "|".join(e[1:] for e in IMAGE_EXTENSIONS) + ")"
        return re.compile(regex, re.IGNORECASE)

    def _format(self, template: str, sample: dict[str, Any]) -> str:
        try:
            return template.format(**sample)
        except KeyError as err:
            raise MERError(f"frame pattern '{self.pattern}' uses {err}, which is not a column of the annotations; "
                           f"available: {sorted(k for k in sample if not k.startswith('_'))}") from err
        except (ValueError, TypeError) as err:
            raise MERError(f"frame pattern '{self.pattern}' cannot format sample {sample.get('sample_id')}: {err}") from err
