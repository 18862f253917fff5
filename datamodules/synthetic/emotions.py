"""Emotions as AU combinations with emotion-specific dynamics (timing, intensity, asymmetry, tremor).

Normal AU sets never occur under two 3-class labels; the shared sets in HARD_PROTOTYPES do, so hard
clips are separable only by their dynamics (the MEDN premise): e.g. AU12 as happiness (symmetric, slow
release) vs contempt (asymmetric, quick), or AU1+2 as surprise (fast, large) vs fear (slower, small, tremor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EMOTIONS_7: tuple[str, ...] = ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")
EMOTIONS_3: tuple[str, ...] = ("negative", "positive", "surprise")
TO_3_CLASS: dict[str, str] = {e: "negative" for e in EMOTIONS_7} | {"happiness": "positive", "surprise": "surprise"}

PROTOTYPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "anger": ((4,), (4, 7), (4, 24), (4, 7, 24), (4, 17, 24)),
    "contempt": ((14,), (12, 14)),
    "disgust": ((9,), (10,), (4, 9), (4, 10), (9, 10), (4, 7, 9)),
    "fear": ((1, 2, 4), (1, 2, 4, 20), (4, 20), (1, 4, 20, 25)),
    "happiness": ((6, 12), (6, 12, 25), (6, 7, 12)),
    "sadness": ((1, 4), (1, 4, 15), (15,), (15, 17), (1, 4, 15, 17)),
    "surprise": ((1, 2, 26), (1, 2, 25, 26)),
}
HARD_PROTOTYPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "contempt": ((12,),), "happiness": ((12,),), "fear": ((1, 2), (1, 2, 25)), "surprise": ((1, 2), (1, 2, 25)),
}
GROUP_PRIOR: dict[str, float] = {"negative": 0.55, "positive": 0.22, "surprise": 0.23}  # composite-set-like
NEGATIVE_PRIOR: dict[str, float] = {"anger": 0.25, "contempt": 0.1, "disgust": 0.35, "fear": 0.12, "sadness": 0.18}
TREMOR_PERIOD = 6  # frames


@dataclass(frozen=True)
class Style:
    """Mean dynamics of an emotion; durations are fractions of the clip length."""

    rise: float  # onset -> apex
    hold: float  # apex plateau
    decay: float  # plateau end -> offset
    intensity: float  # relative peak amplitude
    asymmetry: float  # mean left/right imbalance in [0, 1]
    tremor: float  # relative depth of an intensity tremor


STYLES: dict[str, Style] = {
    "anger": Style(0.20, 0.20, 0.30, 0.90, 0.15, 0.05),
    "contempt": Style(0.14, 0.05, 0.15, 0.85, 0.70, 0.0),
    "disgust": Style(0.20, 0.10, 0.30, 0.90, 0.20, 0.0),
    "fear": Style(0.28, 0.10, 0.30, 0.70, 0.10, 0.30),
    "happiness": Style(0.25, 0.15, 0.45, 1.00, 0.05, 0.0),
    "sadness": Style(0.30, 0.15, 0.35, 0.75, 0.10, 0.0),
    "surprise": Style(0.08, 0.15, 0.35, 1.30, 0.05, 0.0),
}


@dataclass(frozen=True)
class Dynamics:
    """Per-clip timing (frame indices) and expression modifiers."""

    n_frames: int
    onset: int
    apex: int
    hold_end: int
    offset: int
    intensity: float
    asymmetry: float  # signed, in [-1, 1]
    tremor: float


def draw_expression(group: str, hard: bool, negative_prior: np.ndarray,
                    rng: np.random.Generator) -> tuple[str, tuple[int, ...]]:
    """Emotion (of 3-class `group`) and its AU set; hard draws use the shared AU sets."""
    if hard:
        emotion = str(rng.choice([e for e in HARD_PROTOTYPES if TO_3_CLASS[e] == group]))
        sets = HARD_PROTOTYPES[emotion]
    else:
        emotion = str(rng.choice(list(NEGATIVE_PRIOR), p=negative_prior)) if group == "negative" else \
            {"positive": "happiness", "surprise": "surprise"}[group]
        sets = PROTOTYPES[emotion]
    return emotion, sets[int(rng.integers(len(sets)))]


def draw_dynamics(emotion: str, difficulty: float, rng: np.random.Generator) -> Dynamics:
    """Sample clip length and dynamics around the emotion's style; spread grows with difficulty."""
    st = STYLES[emotion]
    spread = 0.15 + 0.3 * difficulty
    n = int(rng.integers(24, 61))
    onset = int(round(n * rng.uniform(0.08, 0.2)))
    durs = np.array([st.rise, st.hold, st.decay]) * n * np.exp(rng.normal(0, spread, 3))
    durs *= min(1.0, (n - 1 - onset) / durs.sum())
    offset = min(n - 1, onset + max(2, round(durs[0])) + round(durs[1]) + max(3, round(durs[2])))
    hold_end = min(onset + max(2, round(durs[0])) + round(durs[1]), offset - 1)
    apex = min(onset + max(2, round(durs[0])), hold_end)
    asym = np.clip(st.asymmetry + rng.normal(0, 0.06 + 0.15 * difficulty), 0, 1) * rng.choice([-1, 1])
    return Dynamics(n, onset, apex, hold_end, offset, float(st.intensity * np.exp(rng.normal(0, 0.7 * spread))),
                    float(asym), float(st.tremor * np.exp(rng.normal(0, spread))))


def intensity_profile(n_frames: int, onset: int, apex: int, hold_end: int, offset: int,
                      tremor: float = 0.0) -> np.ndarray:
    """Expression intensity per frame: 0 until onset, raised-cosine rise to 1 at apex, plateau until
    hold_end, raised-cosine release to 0 at offset; an optional tremor dips it (never above 1, 1 at apex)."""
    t = np.arange(n_frames, dtype=np.float64)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip((t - onset) / (apex - onset), 0, 1))
    fall = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - hold_end) / (offset - hold_end), 0, 1))
    s = np.where(t <= apex, rise, fall)
    s *= 1 - tremor * (0.5 - 0.5 * np.cos(2 * np.pi * (t - apex) / TREMOR_PERIOD))
    return np.clip(s, 0, 1).astype(np.float32)
