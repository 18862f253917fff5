"""68-point facial landmarks (iBUG 300-W layout) of the largest face in an RGB image.

Two backends behind one callable interface, both picklable so that ProcessPoolExecutor workers can
receive them: models are loaded lazily on the first call and dropped when pickled.

- "dlib" (default, CPU, no download): HOG frontal-face detector + the 68-point ensemble-of-
  regression-trees shape predictor (Kazemi & Sullivan, CVPR 2014) shipped by the
  face-recognition-models package.
- "face_alignment" (optional extra): FAN (Bulat & Tzimiropoulos, ICCV 2017); its weights are
  downloaded by that package on first use.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datamodules.errors import MERError

from .errors import FaceNotFound

PREDICTOR_FILE = Path("models") / "shape_predictor_68_face_landmarks.dat"


class Landmarker(ABC):
    """`landmarker(image_rgb)` -> (68, 2) float32 (x, y) landmarks of the largest face, or None."""

    @abstractmethod
    def __call__(self, image_rgb: np.ndarray) -> np.ndarray | None: ...

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only; lazily loaded models (attributes starting with '_') are dropped."""
        return {k: (None if k.startswith("_") else v) for k, v in self.__dict__.items()}


def dlib_predictor_path() -> Path:
    """The 68-point model inside face_recognition_models, located without importing that package
    (its __init__ imports pkg_resources, which is deprecated and not always installed)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / PREDICTOR_FILE
        if path.is_file():
            return path
    raise MERError("dlib's 68-point landmark model is missing: pip install face-recognition-models")


class DlibLandmarker(Landmarker):
    """dlib HOG detector + 68-point shape predictor.

    Detection runs on a grey copy downscaled to `detect_max_side` pixels (None: full resolution),
    first with `upsample` pyramid up-samplings, then once more with `upsample + 1` if nothing was
    found (small faces); the shape predictor then runs on the full-resolution image inside the
    rescaled box, so landmark precision is not lost to the downscaling.
    """

    def __init__(self, upsample: int = 1, detect_max_side: int | None = 320, predictor_path: str | Path | None = None):
        self.upsample = upsample
        self.detect_max_side = detect_max_side
        self.predictor_path = Path(predictor_path) if predictor_path else None
        self._detector: Any = None
        self._predictor: Any = None
        self._rectangle: Any = None

    def _load(self) -> None:
        try:
            import dlib
        except ImportError as err:
            raise MERError("the 'dlib' landmark backend needs dlib: pip install dlib-bin") from err
        path = self.predictor_path or dlib_predictor_path()
        if not path.is_file():
            raise MERError(f"landmark model '{path}' not found: pip install face-recognition-models")
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))
        self._rectangle = dlib.rectangle

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray | None:
        if self._predictor is None:
            self._load()
        gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        scale = 1.0
        small = gray
        if self.detect_max_side and max(gray.shape) > self.detect_max_side:
            scale = self.detect_max_side / max(gray.shape)
            small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        for upsample in (self.upsample, self.upsample + 1):
            boxes = self._detector(small, upsample)
            if len(boxes):
                break
        else:
            return None
        box = max(boxes, key=lambda b: b.area())
        full = self._rectangle(*(round(c / scale) for c in (box.left(), box.top(), box.right(), box.bottom())))
        shape = self._predictor(gray, full)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


class FaceAlignmentLandmarker(Landmarker):
    """FAN landmarks from the optional `face_alignment` package (weights fetched on first use)."""

    def __init__(self, device: str = "cpu", **options: Any):
        self.device = device
        self.options = options
        self._model: Any = None

    def _load(self) -> None:
        advice = "pip install mer-suite[face-alignment] on a machine with internet access, or use the 'dlib' backend"
        try:
            import face_alignment
        except ImportError as err:
            raise MERError(f"the 'face_alignment' landmark backend is not installed: {advice}") from err
        kind = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        try:
            self._model = face_alignment.FaceAlignment(kind, device=self.device, **self.options)
        except Exception as err:  # typically the weight download failing offline
            raise MERError(f"cannot load face_alignment models ({err}): {advice}") from err

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray | None:
        if self._model is None:
            self._load()
        faces = self._model.get_landmarks_from_image(image_rgb)
        if not faces:
            return None
        largest = max(faces, key=lambda lm: np.prod(lm[:, :2].max(0) - lm[:, :2].min(0)))
        return np.asarray(largest[:, :2], dtype=np.float32)


BACKENDS: dict[str, Callable[..., Landmarker]] = {"dlib": DlibLandmarker, "face_alignment": FaceAlignmentLandmarker}


def make_landmarker(backend: str = "dlib", **options: Any) -> Landmarker:
    """A landmarker of the named backend ('dlib' or 'face_alignment'); models load on first call."""
    if backend not in BACKENDS:
        raise MERError(f"unknown landmark backend '{backend}'; choose one of {sorted(BACKENDS)}")
    return BACKENDS[backend](**options)


def require_face(landmarker: Landmarker, image_rgb: np.ndarray, source: str) -> np.ndarray:
    """Landmarks of the largest face in `image_rgb`, or FaceNotFound naming `source`."""
    landmarks = landmarker(image_rgb)
    if landmarks is None:
        raise FaceNotFound(f"no face found in {source}; check the frame (face visible, frontal, lit), "
                           "try another landmark backend, or drop the sample")
    return landmarks
