"""Check a release on disk against its annotations before any long work.

For every annotated sample: is its clip folder there, do its onset/apex/offset frames fall inside
the frames found, and are the frames that sampling needs present and not empty (0 bytes). The report lists each problem
with the sample and what to do; usable samples go on to preparation with their frame paths.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..preprocessing import sample_positions
from .layouts import FrameLayout


@dataclass(frozen=True)
class ClipSource:
    """One usable sample: its table row and the paths of the frames preparation reads."""

    sample_id: str
    row: dict
    frames: dict[int, str]
    """frame number -> path, for the frames that sampling and alignment need."""
    positions: tuple[float, ...]
    """the T fractional frame numbers sampled (over onset→offset or onset→apex)."""


@dataclass
class ReleaseReport:
    root: Path
    pattern: str
    n_samples: int
    sources: list[ClipSource] = field(default_factory=list)
    missing_clips: list[str] = field(default_factory=list)
    frame_problems: list[str] = field(default_factory=list)
    n_frame_files: int = 0
    extensions: Counter = field(default_factory=Counter)

    @property
    def problems(self) -> list[str]:
        return self.missing_clips + self.frame_problems

    def lines(self, limit: int = 20) -> list[str]:
        """Human-readable report: what was found, then every problem (first `limit` of each kind)."""
        ext = ", ".join(f"{n} {e or '(no extension)'}" for e, n in self.extensions.most_common()) or "no frame files"
        out = [
            f"release root {self.root} with pattern '{self.pattern}'",
            f"found {self.n_samples - len(self.missing_clips)} of {self.n_samples} clip folders, {self.n_frame_files} frame files ({ext})",
            f"usable clips: {len(self.sources)}",
        ]
        for title, items in (("missing clips", self.missing_clips), ("frame problems", self.frame_problems)):
            if items:
                out.append(f"{title}: {len(items)}")
                out += [f"  {item}" for item in items[:limit]]
                if len(items) > limit:
                    out.append(f"  ... and {len(items) - limit} more (all are listed in the manifest)")
        return out


def needed_frames(positions: np.ndarray, reference: int) -> list[int]:
    """Integer frames to read: both neighbours of each fractional position and the reference frame."""
    lo = np.floor(positions).astype(int)
    return sorted({reference, *lo.tolist(), *np.ceil(positions).astype(int).tolist()})


def sampling_interval(row: dict, interval: str, last_frame: int, one_clip_per_folder: bool) -> tuple[int, int] | str:
    """(start, stop) frames sampled for `row` (onset→offset or onset→apex), or why there are none.

    An unknown offset (SMIC's empty cells) is the clip folder's last frame when a folder holds
    one clip; in a whole-recording folder (CAS(ME)³) such a clip cannot be sampled.
    """
    onset, apex, offset = (None if is_missing(row.get(k)) else int(row[k]) for k in ("onset", "apex", "offset"))
    if interval == "apex":
        if apex is None:
            return "apex unknown, cannot sample onset→apex; use interval 'offset' or fix the sheet"
        stop = apex
    elif offset is not None:
        stop = offset
    elif one_clip_per_folder:
        stop = last_frame
    else:
        return "offset unknown in a whole-recording folder; fix the sheet to prepare it"
    if stop < onset:
        return f"onset {onset} is after {'apex' if interval == 'apex' else 'offset'} {stop}; fix the sheet to prepare it"
    return onset, stop


def is_missing(value: object) -> bool:
    """An empty cell: None, NaN or pandas' NA."""
    return value is None or bool(pd.isna(value))


def check_release(samples: pd.DataFrame, layout: FrameLayout, num_frames: int, interval: str = "offset") -> ReleaseReport:
    """Match every sample to its frames on disk (one directory listing per clip folder)."""
    report = ReleaseReport(root=layout.root, pattern=layout.pattern, n_samples=len(samples))
    listings: dict[Path, dict[int, Path]] = {}
    for row in tqdm(samples.to_dict("records"), desc="checking release", unit="clip", leave=False):
        name = f"{row['sample_id']}"
        directory = layout.clip_dir(row)
        if directory not in listings:
            listings[directory] = layout.list_frames(row)
            report.n_frame_files += len(listings[directory])
            report.extensions.update(p.suffix.lower() for p in listings[directory].values())
        found = listings[directory]
        if not found:
            what = "folder not found" if not directory.is_dir() else "no file matches the pattern's file name"
            report.missing_clips.append(f"{name}: {directory} ({what}); check --root and the release/frame pattern")
            continue
        first, last = min(found), max(found)
        marks = {"onset": row["onset"], "apex": row.get("apex"), "offset": row["offset"]}
        outside = [f"{k} {int(v)}" for k, v in marks.items() if not is_missing(v) and not first <= int(v) <= last]
        if outside:
            report.frame_problems.append(f"{name}: {', '.join(outside)} outside the frames found ({first}..{last}) in {directory}")
            continue
        span = sampling_interval(row, interval, last, layout.one_clip_per_folder)
        if isinstance(span, str):
            report.frame_problems.append(f"{name}: {span}")
            continue
        positions = sample_positions(*span, num_frames)
        needed = needed_frames(positions, int(row["onset"]))
        absent = [f for f in needed if f not in found]
        if absent:
            report.frame_problems.append(f"{name}: frame(s) {absent[:5]}{'...' if len(absent) > 5 else ''} missing in {directory}")
            continue
        empty = [found[f].name for f in needed if found[f].stat().st_size == 0]
        if empty:
            report.frame_problems.append(f"{name}: frame file(s) {', '.join(empty)} empty (0 bytes) in {directory}")
            continue
        report.sources.append(ClipSource(name, row, {f: str(found[f]) for f in needed}, tuple(positions.tolist())))
    return report
