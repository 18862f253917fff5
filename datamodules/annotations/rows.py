"""One sheet row -> one sample record, or the reasons it cannot be used; oddities become warnings.

Frames: onset must be a frame number. An apex that is not one ('/', empty: the 2019 CASME II
revision) is unknown: kept as <NA> with a warning. An offset that is empty or '/' (SMIC) or 0 after
a later onset (CAS(ME)³'s placeholder) is unknown likewise; any other text there makes the row
unusable. Onset after offset, apex outside onset..offset, or apex equal to the onset (no
onset->apex motion) are warnings: the sample keeps its label (CAS(ME)³'s 860 of MEDN Table II
include spNO.216/d, onset 3647 > offset 2694); preparation reports a clip it cannot sample.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .action_units import ActionUnit, format_action_units, parse_action_units
from .database import Database
from .sheet import cell_text

UNKNOWN_FRAME = ("", "/", "-", "?", "na", "n/a")


@dataclass(frozen=True)
class RowIssue:
    """Something about one sheet row: a warning (sample kept) or why it is unusable (dropped)."""

    sheet: str
    row: int
    sample: str
    kind: Literal["warning", "unusable"]
    message: str

    def __str__(self) -> str:
        return f"{self.sheet} row {self.row} ({self.sample}): {self.message}"


@dataclass
class Record:
    """A usable row: the sample's fields, its AUs and the warnings it raised."""

    fields: dict[str, object]
    units: tuple[ActionUnit, ...]
    issues: list[RowIssue]


def read_row(database: Database, cells: dict[str, object], sheet: str, row: int,
             fold_side: bool, fold_intensity: bool) -> Record | RowIssue:
    """The record of a sheet row (cells by field), or the one 'unusable' issue that lists why not
    (an unusable row's warnings are moot and not reported)."""
    subject_text, clip_text = cell_text(cells["subject"]), cell_text(cells["clip"])
    subject = database.subject.normalise(subject_text)
    clip = clip_text.lower() if database.lowercase_clip else clip_text
    sample = f"{subject or subject_text}/{clip}"
    warnings: list[str] = []
    problems: list[str] = []
    if subject is None:
        problems.append(f"subject {subject_text!r} is not a {database.title} subject id "
                        f"(like {database.subject.format(1)!r} or 1)")
    if not clip:
        problems.append("no clip name")
    elif clip != clip_text:
        warnings.append(f"clip {clip_text!r} read as {clip!r} ({database.title} clip folders are lower case)")
    emotion_raw = cell_text(cells["emotion"])
    emotion = database.emotion(emotion_raw)
    if emotion is None:
        problems.append(f"emotion {emotion_raw!r} is not a {database.title} emotion "
                        f"(known: {', '.join(database.emotions)})" if emotion_raw else "no emotion")
    onset, apex, offset = _frames(cells, warnings, problems)
    units: tuple[ActionUnit, ...] = ()
    if database.has_aus:
        units, au_warnings = parse_action_units(cells.get("aus"), fold_side, fold_intensity)
        warnings += au_warnings
    if problems:
        return RowIssue(sheet, row, sample, "unusable", "; ".join(problems))
    sample_id = database.sample_id.format(subject=subject, clip=clip, onset=onset)
    fields = {
        "sample_id": re.sub(r"[^A-Za-z0-9._-]", "-", sample_id),
        "subject": subject, "subject_number": int(re.findall(r"\d+", subject)[-1]), "clip": clip, "onset": onset, "apex": apex, "offset": offset,
        "emotion": emotion, "emotion_raw": emotion_raw, "aus": format_action_units(units),
        "sheet": sheet, "sheet_row": row,
    }
    fields |= {column: cell_text(cells[column]) or None for column in database.extra_columns if column in cells}
    return Record(fields, units, [RowIssue(sheet, row, sample, "warning", message) for message in warnings])


def _frames(cells: dict[str, object], warnings: list[str], problems: list[str]) -> tuple[int | None, ...]:
    """Onset, apex and offset as ints (None when unknown), with the row's frame warnings/problems."""
    texts = {field: cell_text(cells.get(field)) for field in ("onset", "apex", "offset")}
    onset, apex, offset = (int(text) if text.isascii() and text.isdigit() else None for text in texts.values())
    if onset is None:
        problems.append(f"onset {texts['onset']!r} is not a frame number")
    if apex is None:
        warnings.append(f"apex unknown ({_shown(texts['apex'])}); left empty")
    if offset is None and texts["offset"].lower() not in UNKNOWN_FRAME:
        problems.append(f"offset {texts['offset']!r} is not a frame number")
    elif offset is None:
        warnings.append(f"offset unknown ({_shown(texts['offset'])}); left empty")
    elif offset == 0 and onset:
        warnings.append(f"offset 0 before onset {onset}: offset unknown; left empty")
        offset = None
    if onset is None:
        return onset, apex, offset
    if offset is not None and onset > offset:
        warnings.append(f"onset {onset} is after offset {offset}: no frames to sample; fix the sheet to prepare it")
    if apex is not None and apex < onset:
        warnings.append(f"apex {apex} is before onset {onset}")
    if apex is not None and offset is not None and apex > offset:
        warnings.append(f"apex {apex} is after offset {offset}")
    if apex == onset:
        warnings.append(f"apex equals onset ({onset}): no onset-to-apex motion")
    return onset, apex, offset


def _shown(text: str) -> str:
    return repr(text) if text else "empty"
