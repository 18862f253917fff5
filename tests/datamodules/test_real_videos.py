"""Face pipeline on real data: two face videos (../shared/data/video) for detection, landmark
stability, alignment and optical flow that follows a real smile; the public MEGC2019 CDE flow
images for the layout of the composite flow image.

Thresholds were measured on these videos (dlib 20.0, OpenCV 5.0, default TV-L1) and set with a
margin; each comment gives the measured value.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest

from datamodules.face import (
    AlignmentSettings, align_clip, apex_flow_image, contact_sheet, eye_centres, make_landmarker, optical_strain, read_video,
)
from datamodules.face.preview import TITLE_HEIGHT
from datamodules.preprocessing import flow_sequence, to_gray
from tests.conftest import require_shared

pytestmark = pytest.mark.slow  # every test here detects faces in the real videos (12-16 s a video on 2 busy cores)

SINGLE_FACE = "single_face.mp4"  # 72 frames, 30 fps: neutral -> smile -> neutral
WOLFGANG = "WolfgangLanger_Pexels.mp4"  # 472 frames, ~24 fps, several expressions, head motion
FRAME_STEP = {SINGLE_FACE: 1, WOLFGANG: 4}  # every 4th frame keeps the test time reasonable

# Median over the 68 points of the displacement between consecutive analysed frames, after
# removing the best similarity (head motion), divided by the inter-ocular distance.
# Measured max / median: single_face 0.0245 / 0.0104; WolfgangLanger (frames 1/6 s apart, she
# talks and changes expression) 0.070 / 0.016. A landmark fit that jumps off the face gives > 0.2.
JITTER_MAX = {SINGLE_FACE: 0.05, WOLFGANG: 0.12}
JITTER_MEDIAN = {SINGLE_FACE: 0.02, WOLFGANG: 0.03}
# Eye centres re-detected in the per-frame aligned 144² crops vs the template: measured max
# 0.69 px (single_face), 2.47 px (WolfgangLanger). Inter-ocular distance in the crop is 49 px.
EYE_TOLERANCE_PX = 4.0
# Reference-mode crops: correlation of the next analysed frame's crop with the reference crop,
# measured 0.988 (single_face) and 0.986 (WolfgangLanger, 4 frames later).
NEIGHBOUR_CORRELATION = 0.95


@functools.cache
def detect(name: str) -> tuple[np.ndarray, tuple[np.ndarray | None, ...]]:
    """Frames and per-frame landmarks (None where no face) of a video; detection runs once per video."""
    frames = read_video(require_shared(f"data/video/{name}"), FRAME_STEP[name])
    landmarker = make_landmarker("dlib")
    return frames, tuple(landmarker(frame) for frame in frames)


@pytest.fixture(scope="module", params=[SINGLE_FACE, WOLFGANG])
def video(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, np.ndarray]:
    """(name, frames (L, H, W, 3), landmarks (L, 68, 2)); fails if any frame has no face."""
    frames, landmarks = detect(request.param)
    missing = [i for i, lm in enumerate(landmarks) if lm is None]
    assert not missing, f"no face in analysed frames {missing} of {request.param}"
    return request.param, frames, np.stack(landmarks)


def inter_ocular(landmarks: np.ndarray) -> np.ndarray:
    eyes = eye_centres(landmarks)
    return np.linalg.norm(eyes[..., 1, :] - eyes[..., 0, :], axis=-1)


def fit_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`source` (N, 2) moved by the least-squares similarity that best matches `target`."""
    n = len(source)
    design = np.zeros((2 * n, 4))
    design[0::2] = np.c_[source[:, 0], -source[:, 1], np.ones(n), np.zeros(n)]
    design[1::2] = np.c_[source[:, 1], source[:, 0], np.zeros(n), np.ones(n)]
    a, b, tx, ty = np.linalg.lstsq(design, target.reshape(-1), rcond=None)[0]
    return source @ np.array([[a, b], [-b, a]]) + [tx, ty]


def test_a_face_in_every_frame(video: tuple[str, np.ndarray, np.ndarray]) -> None:
    name, frames, landmarks = video
    assert landmarks.shape == (len(frames), 68, 2)
    # eyes and nose tip inside the frame (her chin leaves the frame at times, so not every point)
    height, width = frames.shape[1:3]
    core = np.concatenate([eye_centres(landmarks), landmarks[:, 30:31]], axis=1)
    assert ((core > 0) & (core < [width, height])).all()
    assert inter_ocular(landmarks).min() > 20  # a real face, not a spurious small detection


def test_landmark_jitter_is_small(video: tuple[str, np.ndarray, np.ndarray]) -> None:
    name, _, landmarks = video
    lm = landmarks.astype(np.float64)
    jitter = np.array([
        np.median(np.linalg.norm(fit_similarity(lm[i], lm[i + 1]) - lm[i + 1], axis=1)) / inter_ocular(lm[i + 1])
        for i in range(len(lm) - 1)
    ])
    assert jitter.max() < JITTER_MAX[name], f"worst pair {jitter.argmax()}: {jitter.max():.4f}"
    assert np.median(jitter) < JITTER_MEDIAN[name]


def test_per_frame_alignment_keeps_the_eyes_in_place(video: tuple[str, np.ndarray, np.ndarray]) -> None:
    _, frames, landmarks = video
    settings = AlignmentSettings(per_frame=True)
    crops, _ = align_clip(frames, landmarks, settings)
    landmarker = make_landmarker("dlib")
    redetected = [landmarker(crop) for crop in crops]  # independent of the transform's own arithmetic
    assert all(lm is not None for lm in redetected)
    deviation = np.linalg.norm(eye_centres(np.stack(redetected)) - settings.template_eyes(), axis=-1)
    assert deviation.max() < EYE_TOLERANCE_PX


def test_reference_alignment_keeps_neighbouring_crops_alike(video: tuple[str, np.ndarray, np.ndarray]) -> None:
    _, frames, landmarks = video
    crops, mapped = align_clip(frames[:2], landmarks[0], AlignmentSettings())
    assert mapped.shape == (68, 2)
    gray = to_gray(crops).reshape(2, -1).astype(np.float64)
    assert np.corrcoef(gray[0], gray[1])[0, 1] > NEIGHBOUR_CORRELATION


def box(points: np.ndarray, margin: float) -> tuple[slice, slice]:
    (x0, y0), (x1, y1) = np.rint(points.min(0) - margin).astype(int), np.rint(points.max(0) + margin).astype(int)
    return slice(max(y0, 0), y1), slice(max(x0, 0), x1)


def nonrigid_motion(flow: np.ndarray, region: tuple[slice, slice], face: tuple[slice, slice]) -> float:
    """Mean flow magnitude in `region` after subtracting the affine motion fitted over `face`.

    The eye-based alignment cannot undo everything the head does (he leans towards the camera:
    perspective and pitch change the lower face); an affine fit over the whole face takes that
    out and leaves local deformation such as a smile.
    """
    y, x = np.mgrid[0:flow.shape[1], 0:flow.shape[2]].astype(np.float64)
    design = np.c_[x[face].ravel(), y[face].ravel(), np.ones(x[face].size)]
    full = np.stack([x, y, np.ones_like(x)], axis=-1)
    residual = [c - full @ np.linalg.lstsq(design, c[face].ravel(), rcond=None)[0] for c in flow.astype(np.float64)]
    return float(np.hypot(*residual)[region].mean())


def test_flow_rises_and_falls_with_the_smile(tmp_path) -> None:
    frames, detected = detect(SINGLE_FACE)
    landmarks = np.stack(detected)
    # Where the smile is, from the landmarks: mouth width / inter-ocular distance is 0.73 in the
    # neutral frames, up to 1.07 during the smile (above half-way on frames 20-69), 0.79 on the last.
    width = np.linalg.norm(landmarks[:, 54] - landmarks[:, 48], axis=1) / inter_ocular(landmarks)
    neutral = np.median(width[:10])
    amplitude = width.max() - neutral
    smiling = np.flatnonzero(width > neutral + 0.5 * amplitude)
    before = np.flatnonzero(width < neutral + 0.1 * amplitude)
    before = before[before < smiling[0]]
    assert smiling[0] > 5 and smiling[-1] < len(width) - 1, "the smile must start and end inside the video"

    # TV-L1 at 144² of each analysed frame against the first; per-frame alignment, because the
    # man leans in (reference-mode crops show a whole-face flow of up to 9 px from the zoom alone).
    sampled = np.r_[0:69:4, 69, 70, 71]  # every 4th frame and the last three, where the smile fades
    crops, mapped = align_clip(frames[sampled], landmarks[sampled], AlignmentSettings(per_frame=True))
    flow = flow_sequence(to_gray(crops))
    mouth, face = box(mapped[0, 48:68], 8.0), box(mapped[0, :27], 0.0)
    motion = np.array([nonrigid_motion(f, mouth, face) for f in flow])
    targets = sampled[1:]
    peak = motion.max()
    # Measured (px): 0.20, 0.26, 0.37, 0.80 on frames 4-16 (onset at 16), 3.36 peak on frame 24,
    # 1.8-3.1 while the smile lasts, then 3.10, 2.04, 1.41 on frames 69, 70, 71 as it fades
    # (mouth width there 0.97, 0.86, 0.79: the last frame is not fully neutral yet).
    assert targets[motion.argmax()] in smiling  # the peak lies inside the smile
    assert motion[np.isin(targets, before)].mean() < 0.3 * peak  # measured 0.12 of the peak
    assert (np.diff(motion[-3:]) < 0).all()  # falls frame by frame as the smile fades
    assert motion[-1] < 0.6 * peak  # measured 0.42

    shown = [0, 4, 6, 10, 14, 18, 19, 20]  # positions in `sampled`: frames 0, 16, 24, 40, 56, 69, 70, 71
    rows = [(f"{SINGLE_FACE}: frames {sampled[shown].tolist()}", crops[shown], flow[np.array(shown[1:]) - 1])]
    path = contact_sheet(rows, tmp_path / "single_face.png")
    image = cv2.imread(str(path))
    assert image.shape == (TITLE_HEIGHT + 2 * 144, len(shown) * 144, 3)


def best_strain_correlation(u: np.ndarray, v: np.ndarray, strain: np.ndarray) -> float:
    """How well strain recomputed from channels (u, v) explains the stored strain channel; the
    channels were min-max normalised separately, so v's scale relative to u is searched."""
    return max(
        np.corrcoef(optical_strain(np.stack([u, ratio * v])).ravel(), strain.ravel())[0, 1]
        for ratio in np.exp(np.linspace(-2, 2, 21))
    )


def test_cde_images_store_u_v_strain_as_rgb(cde_root: Path) -> None:
    images = np.stack([cv2.imread(str(p)) for p in sorted((cde_root / "flow").glob("*.png"))]).astype(np.float64)
    assert len(images) == 442
    # normalised after resizing: every channel of every 28x28 file spans exactly 0..255
    assert (images.min(axis=(1, 2)) == 0).all() and (images.max(axis=(1, 2)) == 255).all()
    # strain is non-negative and near zero on most of the face: the lowest median, in OpenCV's
    # channel 0 (B) for 441 of the 442 files (u and v sit mid-range)
    medians = np.median(images.reshape(len(images), -1, 3), axis=1)
    assert (medians.argmin(axis=1) == 0).mean() > 0.95
    # u vs v: the stored strain is better explained with u = channel 2 (R), v = channel 1 (G)
    # than the other way round for 83% of the files (mean correlation 0.857 vs 0.835)
    u_is_red = [
        best_strain_correlation(im[..., 2], im[..., 1], im[..., 0]) > best_strain_correlation(im[..., 1], im[..., 2], im[..., 0])
        for im in images
    ]
    assert np.mean(u_is_red) > 0.7


def test_apex_flow_image_has_the_cde_layout() -> None:
    frames, detected = detect(SINGLE_FACE)
    landmarks = np.stack(detected)
    crops, _ = align_clip(frames[[0, 24]], landmarks[[0, 24]], AlignmentSettings(per_frame=True))  # onset, smile
    gray = to_gray(crops)
    image = apex_flow_image(gray[0], gray[1])
    assert image.shape == (28, 28, 3) and image.dtype == np.uint8
    assert (image.min(axis=(0, 1)) == 0).all() and (image.max(axis=(0, 1)) == 255).all()
    as_read = image[..., ::-1]  # what cv2.imread gives for a CDE file: (strain, v, u)
    # measured medians (strain, v, u) = (7, 193, 119); CDE files overall (14, 139, 125)
    assert np.median(as_read.reshape(-1, 3), axis=0).argmin() == 0
