"""Face pipeline on synthetic inputs: alignment geometry, frame checks, optical strain, the apex
flow image, the contact sheet and landmarker pickling (no real data needed)."""

from __future__ import annotations

import importlib.util
import pickle

import cv2
import numpy as np
import pytest

from datamodules.face import (
    AlignmentSettings,
    BadFrame,
    FaceNotFound,
    align_clip,
    apex_flow_image,
    check_frame,
    contact_sheet,
    eye_centres,
    flow_to_rgb,
    make_landmarker,
    optical_strain,
    require_face,
)
from datamodules.face.preview import TITLE_HEIGHT
from datamodules.errors import MERError

SETTINGS = AlignmentSettings(size=96)


def texture(shape: tuple[int, int], seed: int = 0, blur: float = 2.0) -> np.ndarray:
    """Smooth random grey texture in 0-255 (float32), good for optical flow."""
    noise = np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), blur)
    return (smooth - smooth.min()) / np.ptp(smooth) * 255


def canonical_landmarks(settings: AlignmentSettings, seed: int = 0) -> np.ndarray:
    """Random (68, 2) landmarks in crop coordinates whose eye centres sit exactly on the template."""
    points = np.random.default_rng(seed).uniform(0.15, 0.85, (68, 2)) * settings.size
    points[36:48] += np.repeat(settings.template_eyes() - eye_centres(points), 6, axis=0)
    return points


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """(2, 3) matrix: rotate by `angle_deg`, scale, then shift."""
    c, s = scale * np.cos(np.radians(angle_deg)), scale * np.sin(np.radians(angle_deg))
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:, 2]


def test_alignment_undoes_a_known_similarity() -> None:
    crop_points = canonical_landmarks(SETTINGS)
    to_image = similarity(25.0, 2.3, (180.0, 60.0))
    image_points = apply(to_image, crop_points)
    # a bright disc at the image position of landmark 30 must land on its template position
    frame = np.full((420, 560, 3), 40, np.uint8)
    cv2.circle(frame, tuple(np.rint(image_points[30]).astype(int)), 6, (255, 255, 255), -1)
    crops, mapped = align_clip(frame[None], image_points, SETTINGS)
    assert crops.shape == (1, 96, 96, 3) and crops.dtype == np.uint8
    assert mapped.shape == (68, 2)
    assert np.abs(mapped - crop_points).max() < 1.0
    ys, xs = np.nonzero(crops[0, :, :, 0] > 150)
    assert np.hypot(xs.mean() - crop_points[30, 0], ys.mean() - crop_points[30, 1]) < 1.0


def moving_face_clip(settings: AlignmentSettings, steps: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A textured 'face' translated by (6, 4) px per frame, with its landmarks."""
    crop_points = canonical_landmarks(settings)
    base = similarity(-10.0, 1.5, (60.0, 40.0))
    background = texture((300, 360))
    frames, landmarks = [], []
    for t in range(steps):
        shift = np.array([[1, 0, 6.0 * t], [0, 1, 4.0 * t]])
        frames.append(cv2.warpAffine(background, shift, (360, 300), borderMode=cv2.BORDER_REFLECT))
        landmarks.append(apply(base, crop_points) + [6.0 * t, 4.0 * t])
    gray = np.stack(frames).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1), np.stack(landmarks)


def test_reference_mode_keeps_the_motion_and_per_frame_mode_removes_it() -> None:
    frames, landmarks = moving_face_clip(SETTINGS)
    template = canonical_landmarks(SETTINGS)
    crops, mapped = align_clip(frames, landmarks, SETTINGS)
    assert mapped.shape == landmarks.shape
    assert np.abs(mapped[0] - template).max() < 1e-3
    # one transform: the face's (6, 4) px/frame motion survives, scaled by the crop scale 1 / 1.5
    step = np.hypot(6.0, 4.0) / 1.5
    assert np.allclose(np.linalg.norm(mapped[2] - mapped[0], axis=1), 2 * step, atol=1e-3)
    assert np.abs(crops[2].astype(float) - crops[0]).mean() > 5

    per_frame = AlignmentSettings(size=96, per_frame=True)
    crops_pf, mapped_pf = align_clip(frames, landmarks, per_frame)
    assert np.abs(mapped_pf - template).max() < 1e-3
    inner = (slice(10, -10), slice(10, -10))  # away from replicated borders
    assert np.abs(crops_pf[2][inner].astype(float) - crops_pf[0][inner]).mean() < 1.0

    _, mapped_ref1 = align_clip(frames, landmarks, SETTINGS, reference=1)
    assert np.abs(mapped_ref1[1] - template).max() < 1e-3
    with pytest.raises(ValueError, match="per_frame"):
        align_clip(frames, landmarks[0], per_frame)


@pytest.mark.parametrize(
    "image, what",
    [(None, "cannot read"), (np.zeros((0, 0, 3), np.uint8), "empty"), (np.full((48, 64, 3), 128, np.uint8), "blank")],
)
def test_check_frame_rejects_unusable_frames(image: np.ndarray | None, what: str) -> None:
    with pytest.raises(BadFrame, match=what) as info:
        check_frame(image, "sub01/EP02_01f/img46.jpg")
    assert "sub01/EP02_01f/img46.jpg" in str(info.value)
    assert isinstance(info.value, MERError)


def test_check_frame_returns_a_good_frame() -> None:
    image = texture((48, 64)).astype(np.uint8)
    assert check_frame(image, "x") is image


def grid(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return x, y


def test_optical_strain_of_analytic_flows() -> None:
    x, y = grid()
    zero = np.zeros_like(x)
    translation = np.stack([zero + 2.5, zero - 1.0])
    assert np.abs(optical_strain(translation)).max() < 1e-6
    rotation = np.stack([-0.1 * y, 0.1 * x])  # rigid rotation: no strain
    assert np.abs(optical_strain(rotation)).max() < 1e-6
    assert np.allclose(optical_strain(np.stack([0.3 * x, zero])), 0.3, atol=1e-6)  # e_xx = a
    assert np.allclose(optical_strain(np.stack([zero, 0.2 * y])), 0.2, atol=1e-6)  # e_yy = b
    # simple shear u = c·y: e_xy = e_yx = c/2, magnitude sqrt(2)·c/2
    assert np.allclose(optical_strain(np.stack([0.4 * y, zero])), 0.4 / np.sqrt(2), atol=1e-6)


def test_apex_flow_image_of_a_sliding_patch() -> None:
    onset = texture((112, 112), seed=3)
    apex = onset.copy()
    apex[36:76, 38:78] = onset[36:76, 35:75]  # a central patch slides 3 px to the right
    image = apex_flow_image(onset.astype(np.uint8), apex.astype(np.uint8))
    assert image.shape == (28, 28, 3) and image.dtype == np.uint8
    assert all(image[..., c].min() == 0 and image[..., c].max() == 255 for c in range(3))
    u, v, strain = image.astype(float).transpose(2, 0, 1)
    patch = np.zeros((28, 28), bool)
    patch[11:17, 11:17] = True  # interior of the patch at 28², away from its edges
    background = np.ones((28, 28), bool)
    background[6:22, 6:22] = False
    assert u[patch].mean() - u[background].mean() > 150  # horizontal motion in the u channel
    assert abs(v[patch].mean() - v[background].mean()) < 60  # little in v
    assert strain[patch].mean() < 100 and strain[background].mean() < 100  # strain at the patch edges only
    assert strain[~patch & ~background].max() > 200


def test_flow_to_rgb_encodes_direction_and_magnitude() -> None:
    flow = np.zeros((2, 4, 4), np.float32)
    flow[0, :, 2:] = 1.0  # right half moves right
    rgb = flow_to_rgb(flow, max_magnitude=2.0)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert rgb[:, :2].max() == 0  # no motion: black
    assert tuple(rgb[0, 3]) == pytest.approx((128, 0, 0), abs=1)  # hue 0 (red), half the given maximum


def test_contact_sheet_writes_one_png(tmp_path) -> None:
    crops = np.stack([np.full((64, 64, 3), 40 * t, np.uint8) for t in range(4)])
    flow = np.random.default_rng(0).normal(size=(3, 2, 64, 64)).astype(np.float32)
    rows = [("clip with flow", crops, flow), ("crops only", crops[:3], None), ("dropped by max_rows", crops, flow)]
    path = contact_sheet(rows, tmp_path / "preview" / "sheet.png", max_rows=2)
    image = cv2.imread(str(path))
    assert image.shape == (2 * TITLE_HEIGHT + 3 * 64, 4 * 64, 3)
    assert sorted(p.name for p in path.parent.iterdir()) == ["sheet.png"]  # no temporary file left


@pytest.mark.slow
def test_landmarker_pickles_before_and_after_use() -> None:
    landmarker = make_landmarker("dlib", upsample=1, detect_max_side=320)
    blank = np.zeros((240, 320, 3), np.uint8)
    fresh = pickle.loads(pickle.dumps(landmarker))
    assert fresh(blank) is None
    assert landmarker(blank) is None  # loads the models
    used = pickle.loads(pickle.dumps(landmarker))
    assert used._predictor is None and used.detect_max_side == 320
    assert used(blank) is None
    with pytest.raises(FaceNotFound, match="frame 7 of clip A"):
        require_face(used, blank, "frame 7 of clip A")


def test_unknown_backend_and_missing_face_alignment_are_user_errors() -> None:
    with pytest.raises(MERError, match="unknown landmark backend"):
        make_landmarker("mediapipe")
    if importlib.util.find_spec("face_alignment") is not None:
        pytest.skip("face_alignment is installed; only its missing-package error is tested")
    landmarker = make_landmarker("face_alignment")
    with pytest.raises(MERError, match=r"pip install mer-suite\[face-alignment\]"):
        landmarker(np.zeros((32, 32, 3), np.uint8))
