"""Synthetic subjects: identity parameters, 68-point neutral landmarks and neutral-face rendering.

Landmarks follow the iBUG 68-point convention (0-16 jaw, 17-21 right brow, 22-26 left brow, 27-35 nose,
36-41 right eye, 42-47 left eye, 48-59 outer lip, 60-67 inner lip); "right" is the subject's right,
i.e. the image-left side. Coordinates are (x, y) pixels with the centre of pixel (0, 0) at (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

REF_SIZE = 144  # image size at which pixel-valued constants (AU sigmas, amplitudes) are expressed
_SS = 2  # supersampling factor of the neutral rendering (antialiasing)
_SHIFT = 4  # fixed-point bits for sub-pixel cv2 drawing

# Index of the horizontally mirrored counterpart of every landmark.
MIRROR: np.ndarray = np.array(
    [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
     45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
     54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)
# Landmarks defined on the image-left half (the rest are mirrored or lie on the midline).
_LEFT_HALF = (*range(0, 8), *range(17, 22), 31, 32, *range(36, 42), 48, 49, 50, 59, 58, 60, 61, 67)
_MIDLINE = (8, 27, 28, 29, 30, 33, 51, 57, 62, 66)

_SKIN = np.array([[245, 208, 184], [224, 172, 138], [190, 132, 98], [141, 94, 64], [96, 62, 44]], np.float32)
_HAIR = np.array([[28, 22, 20], [62, 42, 30], [112, 76, 48], [196, 160, 104], [150, 146, 140], [140, 66, 34]],
                 np.float32)
_IRIS = np.array([[92, 58, 34], [48, 32, 22], [78, 112, 150], [86, 112, 72], [120, 96, 60]], np.float32)


@dataclass(frozen=True)
class Identity:
    """Per-subject parameters; lengths are fractions of the image size, colours RGB in 0-255."""

    index: int
    # geometry
    cx: float
    eye_y: float
    half_width: float
    chin: float  # eye line -> chin
    forehead: float  # eye line -> top of the head
    jaw_exp: float  # < 1 squarer jaw
    eye_dist: float
    eye_w: float
    eye_h: float
    canthal_tilt: float
    brow_gap: float
    brow_arch: float
    brow_thick: float
    brow_len: float
    nose_len: float
    nose_w: float
    mouth_pos: float  # fraction of the nose-tip -> chin distance
    mouth_w: float
    upper_lip: float
    lower_lip: float
    roll: float  # degrees
    fringe: float
    # appearance
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    background: tuple[float, float, float]
    shirt: tuple[float, float, float]
    light_angle: float
    light: float
    pores: float
    blemishes: int
    blush: float
    texture_seed: int
    # idiosyncrasies
    expressivity: float  # gain on all AU amplitudes
    base_asymmetry: float  # added to every clip's left/right asymmetry
    habit_au: int  # AU of a habitual, non-emotional twitch
    habit_rate: float  # probability that a clip contains the twitch
    habit_amp: float  # twitch amplitude, pixels at REF_SIZE


@lru_cache(maxsize=512)
def make_identity(seed: int, index: int) -> Identity:
    """Draw the identity of subject `index`; depends only on (seed, index)."""
    rng = np.random.default_rng([seed, index, 0x1D])
    u = rng.uniform
    eye_w = u(0.09, 0.11)
    hsv = np.uint8([[[u(0, 180), u(40, 140), u(90, 190)]]])
    background = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(float)
    shirt = cv2.cvtColor(np.uint8([[[u(0, 180), u(60, 200), u(50, 200)]]]), cv2.COLOR_HSV2RGB)[0, 0].astype(float)
    t = u(0, len(_SKIN) - 1)
    skin = _SKIN[int(t)] + (t % 1) * (_SKIN[min(int(t) + 1, len(_SKIN) - 1)] - _SKIN[int(t)])
    skin = skin * rng.normal(1, 0.03, 3)
    return Identity(
        index=index, cx=0.5 + rng.normal(0, 0.012), eye_y=u(0.40, 0.45), half_width=u(0.27, 0.33),
        chin=u(0.36, 0.41), forehead=u(0.27, 0.32), jaw_exp=u(0.72, 1.0), eye_dist=u(0.19, 0.235),
        eye_w=eye_w, eye_h=eye_w * u(0.36, 0.46), canthal_tilt=u(-0.004, 0.01), brow_gap=u(0.065, 0.09),
        brow_arch=u(0.008, 0.02), brow_thick=u(0.014, 0.022), brow_len=eye_w * u(1.3, 1.6),
        nose_len=u(0.13, 0.17), nose_w=u(0.09, 0.125), mouth_pos=u(0.33, 0.42), mouth_w=u(0.15, 0.21),
        upper_lip=u(0.018, 0.028), lower_lip=u(0.022, 0.034), roll=rng.normal(0, 2.0), fringe=u(0.03, 0.1),
        skin=tuple(np.clip(skin, 0, 255)), hair=tuple(_HAIR[rng.integers(len(_HAIR))] * u(0.85, 1.15)),
        iris=tuple(_IRIS[rng.integers(len(_IRIS))]), background=tuple(background), shirt=tuple(shirt),
        light_angle=u(0, 2 * np.pi), light=u(0.04, 0.14), pores=u(0.035, 0.06),
        blemishes=int(rng.integers(4, 30)), blush=u(0, 0.2), texture_seed=int(rng.integers(2**31)),
        expressivity=float(np.exp(rng.normal(0, 0.15))), base_asymmetry=rng.normal(0, 0.1),
        habit_au=int(rng.choice([2, 7, 14, 24])), habit_rate=u(0.2, 0.7), habit_amp=u(0.25, 0.5),
    )


def _local_geometry(idt: Identity, size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Unrolled landmarks (68, 2) and auxiliary outlines, in pixels, x relative to the face midline."""
    s = float(size)
    ey = idt.eye_y * s
    a = idt.half_width * s
    lm = np.zeros((68, 2))
    # jaw: superellipse from the image-left temple (0) to the chin (8)
    t = np.linspace(0, np.pi / 2, 9)
    jaw_top, chin_y = ey + 0.03 * s, ey + idt.chin * s
    lm[0:9, 0] = -a * np.cos(t) ** idt.jaw_exp
    lm[0:9, 1] = jaw_top + (chin_y - jaw_top) * np.sin(t) ** idt.jaw_exp
    # right brow, outer (17) -> inner (21), arched
    inner = -(idt.eye_dist / 2 - idt.eye_w / 2 + 0.004) * s
    u = np.linspace(0, 1, 5)
    lm[17:22, 0] = inner - idt.brow_len * s * (1 - u)
    lm[17:22, 1] = ey - idt.brow_gap * s - idt.brow_arch * s * (1 - ((u - 0.35) / 0.65) ** 2)
    # nose bridge and base
    tip_y = ey + idt.nose_len * s
    lm[27:31, 1] = np.linspace(ey - 0.005 * s, tip_y, 4)
    lm[31:34] = [[-idt.nose_w * s / 2, tip_y + 0.012 * s], [-idt.nose_w * s / 4, tip_y + 0.02 * s],
                 [0, tip_y + 0.024 * s]]
    # right eye: outer, upper-outer, upper-inner, inner, lower-inner, lower-outer
    ex, w, h, tilt = -idt.eye_dist * s / 2, idt.eye_w * s, idt.eye_h * s, idt.canthal_tilt * s
    lm[36:42] = [[ex - w / 2, ey - tilt], [ex - w / 6, ey - h / 2 - tilt / 2], [ex + w / 6, ey - h / 2],
                 [ex + w / 2, ey + 0.1 * h], [ex + w / 6, ey + 0.42 * h], [ex - w / 6, ey + 0.4 * h - tilt / 2]]
    # mouth
    my = tip_y + (chin_y - tip_y) * idt.mouth_pos
    mw, ul, ll = idt.mouth_w * s, idt.upper_lip * s, idt.lower_lip * s
    lm[[48, 49, 50, 51]] = [[-mw / 2, my], [-mw / 3, my - 0.8 * ul], [-mw / 9, my - ul], [0, my - 0.8 * ul]]
    lm[[59, 58, 57]] = [[-mw / 3, my + 0.8 * ll], [-mw / 8, my + ll], [0, my + ll]]
    lm[[60, 61, 62, 67, 66]] = [[-0.42 * mw, my], [-mw / 6, my - 0.1 * ul], [0, my - 0.1 * ul],
                                [-mw / 6, my + 0.1 * ul], [0, my + 0.1 * ul]]
    lm[list(_MIDLINE), 0] = 0.0
    right = [i for i in range(68) if i not in _LEFT_HALF and i not in _MIDLINE]
    lm[right] = lm[MIRROR[right]] * [-1, 1]
    lm += np.random.default_rng(idt.texture_seed + 1).normal(0, 0.0025 * s, lm.shape)  # baseline asymmetry
    # auxiliary outlines: forehead arc closing the face, hair cap, hairline
    top_y = ey - idt.forehead * s
    phi = np.linspace(0, np.pi, 25)
    forehead = np.stack([a * np.cos(phi), jaw_top - (jaw_top - top_y) * np.sin(phi)], 1)
    cap_y = jaw_top - 0.08 * s
    cap = np.stack([1.1 * a * np.cos(phi), cap_y - (cap_y - top_y + 0.035 * s) * np.sin(phi)], 1)
    back = _ellipse(np.array([0.0, ey + 0.02 * s]), (1.13 * a, ey + 0.02 * s - top_y + 0.035 * s))
    xs = np.linspace(-1.05 * a, 1.05 * a, 25)
    hairline = np.stack([xs, top_y + idt.fringe * s + 0.16 * s * (xs / a) ** 4], 1)
    aux = {"face": np.vstack([lm[0:17], forehead[1:-1]]), "back": back, "fringe": np.vstack([hairline, cap]),
           "ears": np.array([[-a * 0.98, ey + 0.06 * s], [a * 0.98, ey + 0.06 * s]]),
           "neck": np.array([[-0.4 * a, chin_y - 0.1 * s], [0.4 * a, chin_y - 0.1 * s],
                             [0.48 * a, s * 1.2], [-0.48 * a, s * 1.2]])}
    return lm, aux


def _geometry(idt: Identity, size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Landmarks and outlines in image pixels: the local geometry rolled about the eye line and centred."""
    lm, aux = _local_geometry(idt, size)
    th = np.deg2rad(idt.roll)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    origin = np.array([0.0, idt.eye_y * size])
    centre = np.array([idt.cx * size, idt.eye_y * size])

    def place(p: np.ndarray) -> np.ndarray:
        return (p - origin) @ rot.T + centre

    return place(lm).astype(np.float32), {k: place(v) for k, v in aux.items()}


def _fp(pts: np.ndarray) -> np.ndarray:
    """Final-resolution pixel coordinates -> fixed-point supersampled coordinates for cv2 drawing."""
    return np.round((np.asarray(pts) * _SS + (_SS - 1) / 2) * (1 << _SHIFT)).astype(np.int32)


def _soft(mask: np.ndarray, blur: float) -> np.ndarray:
    m = mask.astype(np.float32) / 255
    return cv2.GaussianBlur(m, (0, 0), blur * _SS) if blur > 0 else m


def _poly(res: int, pts: np.ndarray, blur: float = 0.0) -> np.ndarray:
    """Antialiased filled-polygon mask in [0, 1]."""
    m = np.zeros((res, res), np.uint8)
    cv2.fillPoly(m, [_fp(pts)], 255, cv2.LINE_AA, _SHIFT)
    return _soft(m, blur)


def _line(res: int, pts: np.ndarray, thick: float, blur: float = 0.0) -> np.ndarray:
    """Antialiased open-polyline mask in [0, 1]; `thick` in final-resolution pixels."""
    m = np.zeros((res, res), np.uint8)
    cv2.polylines(m, [_fp(pts)], False, 255, max(1, round(thick * _SS)), cv2.LINE_AA, _SHIFT)
    return _soft(m, blur)


def _ellipse(centre: np.ndarray, axes: tuple[float, float], angle: float = 0.0, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a = np.deg2rad(angle)
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    return np.stack([x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a)], 1) + centre


def _spline(pts: np.ndarray, closed: bool, k: int = 6) -> np.ndarray:
    """Catmull-Rom curve through `pts` (k samples per segment)."""
    p = np.asarray(pts, np.float64)
    ext = np.vstack([p[-1:], p, p[:2]]) if closed else np.vstack([p[:1], p, p[-1:]])
    t = np.linspace(0, 1, k, endpoint=False)[:, None]
    segs = [0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
            for p0, p1, p2, p3 in zip(ext[:-3], ext[1:-2], ext[2:-1], ext[3:])]
    return np.vstack(segs if closed else [*segs, p[-1:]])


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float | tuple[float, float]) -> np.ndarray:
    """Smooth Gaussian noise with unit standard deviation."""
    sx, sy = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    n = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigmaX=sx, sigmaY=sy)
    return n / (n.std() + 1e-6)


def _paint(img: np.ndarray, mask: np.ndarray, color, alpha: float = 1.0) -> None:
    """Alpha-blend a colour (RGB triple or H x W x 3 layer) into `img` in place."""
    m = mask[..., None] * np.float32(alpha)
    img *= 1 - m
    img += m * np.asarray(color, np.float32)


def _render(idt: Identity, lm: np.ndarray, aux: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Draw the neutral face at `_SS`x resolution, downsample, then add per-subject fine texture."""
    rng = np.random.default_rng(idt.texture_seed)
    res, s = size * _SS, float(size)
    skin, hair = np.array(idt.skin, np.float32), np.array(idt.hair, np.float32)
    yy, xx = np.mgrid[0:res, 0:res].astype(np.float32)
    xx, yy = (xx - (_SS - 1) / 2) / _SS, (yy - (_SS - 1) / 2) / _SS  # final-resolution pixel coordinates

    bg_tex = 1 + 0.10 * _noise(rng, (res, res), res / 12) + 0.05 * _noise(rng, (res, res), 1.5 * _SS)
    img = np.asarray(idt.background, np.float32) * (bg_tex * (1.1 - 0.2 * yy / s))[..., None]
    cx = idt.cx * s
    _paint(img, _poly(res, _ellipse(np.array([cx, 1.1 * s]), (0.5 * s, 0.22 * s)), 1.0),
           np.array(idt.shirt, np.float32) * (1 + 0.08 * _noise(rng, (res, res), 2 * _SS))[..., None])
    _paint(img, _poly(res, aux["neck"], 1.0), skin * 0.78)
    strands = hair * (1 + 0.15 * _noise(rng, (res, res), (0.7 * _SS, 4 * _SS)))[..., None]
    _paint(img, _poly(res, aux["back"], 0.8), strands * 0.8)
    for ear in aux["ears"]:
        _paint(img, _poly(res, _ellipse(ear, (0.035 * s, 0.075 * s), idt.roll), 0.6), skin * 0.86)

    # face: shaded, blotchy skin
    top, chin = aux["face"][:, 1].min(), lm[8, 1]
    a, b = idt.half_width * s, (chin - top) / 2
    r2 = ((xx - cx) / a) ** 2 + ((yy - (top + chin) / 2) / b) ** 2
    shade = (1 - 0.22 * r2**2) * (1 + idt.light * ((xx - cx) * np.cos(idt.light_angle)
                                                    + (yy - lm[30, 1]) * np.sin(idt.light_angle)) / a)
    layer = skin * (np.clip(shade, 0.5, 1.2) * (1 + 0.035 * _noise(rng, (res, res), 5 * _SS)))[..., None]
    face_mask = _poly(res, _spline(aux["face"], True, 4), 0.6)
    _paint(img, face_mask, layer)
    dark, light = skin * 0.72, np.minimum(skin * 1.15, 255)
    for i, j in ((41, 40), (46, 47)):
        cheek = (lm[i] + lm[j]) / 2 + [0, 0.08 * s]
        _paint(img, _poly(res, _ellipse(cheek, (0.05 * s, 0.03 * s)), 4), (215, 90, 90), idt.blush)

    # eyes: sockets, crease, sclera, iris, pupil, glint, lids
    eye_h = idt.eye_h * s
    for e in (lm[36:42], lm[42:48]):
        centre = e.mean(0)
        _paint(img, _poly(res, _ellipse(centre, (0.8 * idt.eye_w * s, 0.5 * idt.eye_w * s), idt.roll), 3), dark, 0.35)
        _paint(img, _line(res, _spline(e[:4] - [0, 0.5 * eye_h], False), 0.5, 0.6), dark, 0.45)
        eye_mask = _poly(res, _spline(e, True), 0.3)
        _paint(img, eye_mask, (236, 230, 224))
        r = 0.24 * idt.eye_w * s
        _paint(img, _poly(res, _ellipse(centre, (r, r)), 0.3) * eye_mask, idt.iris)
        _paint(img, _poly(res, _ellipse(centre, (0.45 * r, 0.45 * r)), 0.2) * eye_mask, (18, 14, 14))
        _paint(img, _poly(res, _ellipse(centre - 0.35 * r, (0.22 * r, 0.22 * r))) * eye_mask, (250, 250, 250), 0.9)
        _paint(img, _line(res, _spline(e[[0, 1, 2, 3]], False), 0.011 * s, 0.2), (35, 25, 25), 0.9)
        _paint(img, _line(res, _spline(e[[3, 4, 5, 0]], False), 0.005 * s, 0.3), dark, 0.5)

    # brows: tapered polygons with hair texture
    brow = (hair * 0.5 + 20) * (1 + 0.2 * _noise(rng, (res, res), (0.5 * _SS, 0.5 * _SS)))[..., None]
    th = idt.brow_thick * s * np.linspace(0.55, 1.0, 5)[:, None]
    for pts, t in ((lm[17:22], th), (lm[22:27], th[::-1])):
        outline = np.vstack([_spline(pts - t * [0, 0.6], False), _spline((pts + t * [0, 0.4])[::-1], False)])
        _paint(img, _poly(res, outline, 0.5), brow, 0.88)

    # nose: side shading, alae, nostrils, tip highlight
    for side, (k, n) in ((-1, (31, 32)), (1, (35, 34))):
        ridge = np.array([lm[28] + [side * 0.02 * s, 0], lm[29] + [side * 0.03 * s, 0], lm[k] + [0, -0.02 * s]])
        _paint(img, _line(res, _spline(ridge, False), 1.5, 1.5), dark, 0.4)
        ala = _ellipse(lm[k] + [-side * 0.008 * s, -0.012 * s], (0.022 * s, 0.016 * s))
        _paint(img, _poly(res, ala, 1.2), dark, 0.35)
        _paint(img, _poly(res, _ellipse(lm[n] + [0, -0.004 * s], (0.014 * s, 0.007 * s), -side * 15 + idt.roll), 0.4),
               (55, 28, 28), 0.75)
    _paint(img, _poly(res, _ellipse(lm[30] + [0, -0.006 * s], (0.02 * s, 0.014 * s)), 2), light, 0.4)

    # mouth: philtrum, lips, mouth line, highlights, chin shadow
    _paint(img, _line(res, np.array([lm[33], lm[51]]), 0.02 * s, 1.2), dark, 0.15)
    lip = skin * np.array([0.8, 0.55, 0.56], np.float32) + np.array([40, 8, 12], np.float32)
    _paint(img, _poly(res, _spline(lm[48:60], True), 0.5), lip, 0.9)
    _paint(img, _poly(res, _spline(lm[[48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60]], True), 0.5), lip * 0.85, 0.6)
    _paint(img, _line(res, _spline(lm[[48, 60, 61, 62, 63, 64, 54]], False), 0.007 * s, 0.3), (70, 28, 32), 0.85)
    _paint(img, _poly(res, _ellipse((lm[57] + lm[66]) / 2, (0.15 * idt.mouth_w * s, 0.2 * idt.lower_lip * s)), 1),
           (255, 235, 230), 0.25)
    _paint(img, _poly(res, _ellipse(lm[57] + [0, 0.025 * s], (0.05 * s, 0.012 * s)), 2), dark, 0.2)

    # hair fringe and blemishes
    _paint(img, _poly(res, _spline(aux["fringe"], True, 3), 0.8), strands)
    for _ in range(idt.blemishes):
        p = lm[rng.choice([1, 2, 3, 13, 14, 15, 19, 24, 30, 5, 11])] * 0.6 + lm[rng.choice([29, 30, 33])] * 0.4
        p = p + rng.normal(0, 0.04 * s, 2)
        rad = rng.uniform(0.35, 0.9)
        _paint(img, _poly(res, _ellipse(p, (rad, rad * rng.uniform(0.7, 1.0))), 0.3) * face_mask,
               skin * [0.72, 0.6, 0.58], rng.uniform(0.25, 0.6))

    out = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    fmask = cv2.resize(face_mask, (size, size), interpolation=cv2.INTER_AREA)
    pores = 0.7 * _noise(rng, (size, size), 0.6) + 0.5 * _noise(rng, (size, size), 1.5)
    out *= (1 + (idt.pores * fmask + 0.03 * (1 - fmask)) * pores)[..., None]
    return np.clip(out, 0, 255)


@lru_cache(maxsize=128)
def neutral_face(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Neutral image (float32 H x W x 3 RGB in 0-255) and its landmarks (float32 (68, 2)); cached, read-only."""
    idt = make_identity(seed, index)
    lm, aux = _geometry(idt, size)
    img = _render(idt, lm, aux, size)
    img.flags.writeable = False
    lm.flags.writeable = False
    return img, lm
