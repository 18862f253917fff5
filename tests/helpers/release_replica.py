"""Synthetic on-disk replicas of the official releases: frames in each release's folder layout and
an annotation sheet in each database's own format (column names, subject ids, emotion words).

The faces are the synthetic generator's, pasted on a camera-sized canvas, so face detection runs
for real (a few synthetic faces are not found by dlib: those clips are skipped and listed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from datamodules.synthetic.generator import ClipSpec, SyntheticConfig, generate_specs, render_clip


@dataclass
class Replica:
    root: Path
    sheet: Path
    release: str
    n_rows: int
    broken: dict[str, str] = field(default_factory=dict)
    """sample id -> what was broken on purpose ('missing clip', 'missing frame', 'no face')."""


# per database: emotion words of the replica, cycled over clips (all inside the default protocol)
EMOTIONS = {
    "casme2": ["happiness", "disgust", "surprise", "repression", "others"],
    "samm": ["Happiness", "Anger", "Surprise", "Contempt", "Other"],
    "smic": ["negative", "positive", "surprise"],
    "casme3": ["happy", "disgust", "surprise", "others"],
    "dfme": ["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"],
    "mmew": ["happiness", "surprise", "disgust", "fear", "sadness", "anger"],
}
DFME_IDS = {"anger": 0, "contempt": 1, "disgust": 2, "fear": 3, "happiness": 4, "sadness": 5, "surprise": 6}
SMIC_SHORT = {"negative": "ne", "positive": "po", "surprise": "sur"}


def canvas_frames(spec: ClipSpec, config: SyntheticConfig) -> np.ndarray:
    """The clip's faces pasted on a grey 4:3 canvas, like a camera frame (BGR for writing)."""
    faces = render_clip(spec, config).frames
    size = config.image_size
    canvas = np.full((len(faces), size * 3 // 2, size * 2, 3), 96, np.uint8)
    top, left = size // 4, size // 2
    canvas[:, top:top + size, left:left + size] = faces
    return canvas[..., ::-1]


BREAKS = ("missing clip", "missing frame", "no face")


def write_replica(dataset: str, directory: Path, n_subjects: int = 2, clips_per_subject: int = 3,
                  breaks: tuple[str, ...] = BREAKS) -> Replica:
    """Write a replica of `dataset`'s release under `directory`; returns its root and sheet."""
    config = SyntheticConfig(n_subjects=n_subjects, clips_per_subject=clips_per_subject, image_size=192, difficulty=0.1, seed=7)
    specs = generate_specs(config)
    root = directory / f"{dataset}_release"
    rows, broken = [], {}
    per_subject: dict[int, int] = {}
    for i, spec in enumerate(specs):
        s = spec.subject_index + 1
        k = per_subject[s] = per_subject.get(s, 0) + 1
        emotion = EMOTIONS[dataset][i % len(EMOTIONS[dataset])]
        base = {"casme2": 40, "samm": 5500, "smic": 170000, "casme3": 100 * k, "dfme": 0, "mmew": 1}[dataset]
        onset, apex, offset = base + spec.onset, base + spec.apex, base + spec.offset
        row, frame_path, sample_id = _row_and_path(dataset, s, k, emotion, onset, apex, offset)
        rows.append(row)
        frames = canvas_frames(spec, config)
        if "missing clip" in breaks and i == 1:
            broken[sample_id] = "missing clip"
            continue
        if "no face" in breaks and i == 3:  # a clip whose face cannot be found: textured noise, no face
            broken[sample_id] = "no face"
            frames = np.random.default_rng(i).integers(0, 255, frames.shape, dtype=np.uint8)
        for j, frame in enumerate(frames):
            if "missing frame" in breaks and i == 2 and j == spec.onset:
                broken[sample_id] = "missing frame"
                continue
            path = root / frame_path(base + j)
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), frame)
    sheet = _write_sheet(dataset, pd.DataFrame(rows), directory)
    release = {"casme2": "cropped", "smic": "raw"}.get(dataset, "original")
    return Replica(root, sheet, release, len(rows), broken)


def _row_and_path(dataset: str, s: int, k: int, emotion: str, onset: int, apex: int, offset: int):
    """A sheet row in the database's format, its frame path function and its sample id."""
    if dataset == "casme2":
        clip = f"EP0{k}_0{s}f"
        row = {"Subject": s, "Filename": clip, "OnsetFrame": onset, "ApexFrame": apex, "OffsetFrame": offset,
               "Action Units": "4+L10" if k % 2 else "R12", "Estimated Emotion": emotion}
        return row, lambda n: f"sub{s:02d}/{clip}/reg_img{n}.jpg", f"sub{s:02d}_{clip}"
    if dataset == "samm":
        subject, clip = f"{5 + s:03d}", f"{5 + s:03d}_{k}_2"
        row = {"Subject": subject, "Filename": clip, "Inducement Code": k, "Onset Frame": onset, "Apex Frame": apex,
               "Offset Frame": offset, "Duration": offset - onset, "Micro": "Micro", "Action Units": "R6A+R12",
               "Estimated Emotion": emotion, "Objective Classes": 1, "Notes": ""}
        return row, lambda n: f"{subject}/{clip}/{subject}_{n:05d}.jpg", f"{subject}_{clip}"
    if dataset == "smic":
        clip = f"s{s}_{SMIC_SHORT[emotion]}_{k:02d}"
        label = ["negative", "positive", "surprise"].index(emotion)
        row = {"data": "smic", "subject": s, "clip": clip, "label": label, "onset_frame": onset, "apex_frame": apex,
               "offset_frame": offset}
        return row, lambda n: f"s{s}/micro/{emotion}/{clip}/image{n:06d}.bmp", f"s{s:02d}_{clip}"
    if dataset == "casme3":
        subject, clip = f"spNO.{s}", "a"
        row = {"Subject": subject, "Filename": clip, "Onset": onset, "Apex": apex, "Offset": offset, "AU": "12",
               "Objective class": "I", "emotion": emotion}
        return row, lambda n: f"{subject}/{clip}/color/{n}.jpg", f"{subject}_{clip}_{onset}"
    if dataset == "dfme":
        subject, clip = f"sub{s:04d}", f"sub{s:04d}_{k:02d}"
        row = {"Subject": subject, "Filename": clip, "OnsetFrame": onset, "ApexFrame": apex, "OffsetFrame": offset,
               "Emotion": emotion, "EmotionId": DFME_IDS[emotion], "Fps": 500, "AU": "L12"}
        return row, lambda n: f"{clip}/{n:05d}.png", clip
    if dataset == "mmew":
        clip = f"S{s:02d}-0{k}-001"
        row = {"Subject": s, "Filename": clip, "OnsetFrame": onset, "ApexFrame": apex, "OffsetFrame": offset,
               "Action Units": "6+12", "Estimated Emotion": emotion, "remarks": ""}
        return row, lambda n: f"{emotion}/{clip}/{n}.jpg", clip
    raise ValueError(dataset)


def _write_sheet(dataset: str, rows: pd.DataFrame, directory: Path) -> Path:
    if dataset == "mmew":
        path = directory / "MMEW_Micro_Exp.csv"
        rows.to_csv(path, index=False)
        return path
    path = directory / f"{dataset}_coding.xlsx"
    if dataset == "samm":  # notes above the header, as in the official sheet
        banner = pd.DataFrame([["SAMM Dataset - Master FACS Codes"], [None], ["Symbol Key: ..."]])
        with pd.ExcelWriter(path) as writer:
            banner.to_excel(writer, index=False, header=False)
            rows.to_excel(writer, index=False, startrow=len(banner) + 1)
        return path
    rows.to_excel(path, index=False)
    return path
