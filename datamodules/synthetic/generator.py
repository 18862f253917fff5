"""Seeded generator of synthetic micro-expression clips: public API (specs, then rendering)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

import cv2
import numpy as np

from datamodules.synthetic.action_units import AU_VOCABULARY, expression_field
from datamodules.synthetic.emotions import (
    EMOTIONS_3, EMOTIONS_7, GROUP_PRIOR, NEGATIVE_PRIOR, TO_3_CLASS, draw_dynamics, draw_expression,
    intensity_profile,
)
from datamodules.synthetic.faces import REF_SIZE, make_identity, neutral_face

__all__ = ["AU_VOCABULARY", "EMOTIONS_3", "EMOTIONS_7", "TO_3_CLASS", "Clip", "ClipSpec", "SyntheticConfig",
           "au_multi_hot", "generate_specs", "render_clip"]

BASE_AMPLITUDE = 1.3  # peak AU displacement (px at REF_SIZE) of an average clip at difficulty 0.5
CLASS_SKEW = 2.5  # default Dirichlet concentration of per-subject 3-class priors (lower = more skewed subjects)


@dataclass(frozen=True)
class SyntheticConfig:
    n_subjects: int = 12
    clips_per_subject: int = 10  # mean; actual count per subject varies by about +-30 %
    image_size: int = 144
    difficulty: float = 0.5  # 0 easy .. 1 hard
    hard_fraction: float | None = None  # None -> 0.1 + 0.4 * difficulty
    class_skew: float = CLASS_SKEW  # per-subject class priors ~ Dirichlet(class_skew * GROUP_PRIOR); small = identity confound
    fps: int = 200  # nominal
    seed: int = 0


@dataclass(frozen=True)
class ClipSpec:
    """Metadata of one clip; `render_clip` turns it into pixels deterministically."""

    sample_id: str
    subject: str
    emotion: str  # one of EMOTIONS_7
    aus: tuple[int, ...]  # active AUs, sorted, subset of AU_VOCABULARY
    hard: bool  # AU set also occurs in the dataset under a different 3-class label
    n_frames: int
    onset: int
    apex: int
    offset: int
    seed: int
    subject_index: int
    hold_end: int  # last frame of the apex plateau (apex <= hold_end < offset)
    amplitude: float  # peak AU displacement in pixels at REF_SIZE (before the per-AU gain)
    asymmetry: float  # in [-1, 1]; > 0 weaker on the image-left side, < 0 weaker on the image-right side
    tremor: float  # relative depth of the intensity tremor
    noise_std: float  # sensor noise std, grey levels
    jitter_px: float  # std of the temporally correlated head translation, pixels at REF_SIZE
    illum_drift: float  # relative gain change over the clip
    habit_au: int  # subject's habitual non-emotional twitch in this clip (0 = none); not in `aus`
    habit_frame: int
    habit_amp: float  # pixels at REF_SIZE

    @property
    def emotion3(self) -> str:
        return TO_3_CLASS[self.emotion]


@dataclass
class Clip:
    frames: np.ndarray  # uint8 (n_frames, H, W, 3), RGB
    landmarks: np.ndarray  # float32 (n_frames, 68, 2), x, y pixel coordinates


def au_multi_hot(aus: tuple[int, ...]) -> np.ndarray:
    """Multi-hot float32 vector over AU_VOCABULARY."""
    return np.array([au in aus for au in AU_VOCABULARY], np.float32)


def _class_counts(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """(n_subjects, 3) clip counts: skewed per subject, overall close to GROUP_PRIOR, every class present."""
    m = config.clips_per_subject
    totals = rng.integers(max(3, round(0.7 * m)), max(3, round(1.3 * m)) + 1, config.n_subjects)
    base = np.array([GROUP_PRIOR[g] for g in EMOTIONS_3])
    expected = (rng.dirichlet(config.class_skew * base, config.n_subjects) + 1e-3) * totals[:, None]
    for _ in range(50):  # iterative proportional fitting: rows sum to totals, pooled distribution ~ prior
        expected *= base * totals.sum() / expected.sum(0)
        expected *= (totals / expected.sum(1))[:, None]
    counts = np.floor(expected).astype(int)
    for s in range(config.n_subjects):  # largest remainder rounding
        counts[s, np.argsort(counts[s] - expected[s])[: totals[s] - counts[s].sum()]] += 1
    for g in np.flatnonzero(counts.sum(0) == 0):
        s = int(np.argmax(counts.max(1)))
        counts[s, np.argmax(counts[s])] -= 1
        counts[s, g] += 1
    return counts


def generate_specs(config: SyntheticConfig) -> list[ClipSpec]:
    """Metadata of the whole dataset; deterministic given `config`."""
    rng = np.random.default_rng([config.seed, 0x5EC5])
    d = config.difficulty
    hard_fraction = 0.1 + 0.4 * d if config.hard_fraction is None else config.hard_fraction
    counts = _class_counts(config, rng)
    n_total = int(counts.sum())
    hard_draws = np.zeros(n_total, bool)
    hard_draws[rng.choice(n_total, round(hard_fraction * n_total), replace=False)] = True
    specs = []
    for s in range(config.n_subjects):
        idt = make_identity(config.seed, s)
        negative_prior = rng.dirichlet(4 * np.array(list(NEGATIVE_PRIOR.values())))
        groups = rng.permutation(np.repeat(EMOTIONS_3, counts[s]))
        for c, group in enumerate(groups):
            emotion, aus = draw_expression(str(group), hard_draws[len(specs)], negative_prior, rng)
            dyn = draw_dynamics(emotion, d, rng)
            habit = rng.random() < idt.habit_rate
            amplitude = BASE_AMPLITUDE * dyn.intensity * idt.expressivity * (1.3 - 0.6 * d)
            specs.append(ClipSpec(
                sample_id=f"s{s:02d}_c{c:02d}", subject=f"s{s:02d}", emotion=emotion, aus=tuple(sorted(aus)),
                hard=False, n_frames=dyn.n_frames, onset=dyn.onset, apex=dyn.apex, offset=dyn.offset,
                seed=int(np.random.SeedSequence([config.seed, s, c]).generate_state(1)[0]), subject_index=s,
                hold_end=dyn.hold_end, amplitude=float(np.clip(amplitude, 0.25, 2.6)),
                asymmetry=float(np.clip(dyn.asymmetry + idt.base_asymmetry, -1, 1)), tremor=dyn.tremor,
                noise_std=float((0.5 + 3.0 * d) * np.exp(rng.normal(0, 0.2))),
                jitter_px=float((0.03 + 0.35 * d) * np.exp(rng.normal(0, 0.3))),
                illum_drift=float((0.01 + 0.06 * d) * np.exp(rng.normal(0, 0.3))),
                habit_au=idt.habit_au if habit else 0, habit_frame=int(rng.integers(dyn.n_frames)),
                habit_amp=idt.habit_amp if habit else 0.0,
            ))
    labels = defaultdict(set)
    for sp in specs:
        labels[sp.aus].add(sp.emotion3)
    return [replace(sp, hard=len(labels[sp.aus]) > 1) for sp in specs]


def _smooth_noise(rng: np.random.Generator, n: int, channels: int, sigma: float = 3.0) -> np.ndarray:
    """(n, channels) temporally correlated noise with unit marginal std."""
    k = np.exp(-0.5 * (np.arange(-3 * sigma, 3 * sigma + 1) / sigma) ** 2)
    k /= np.linalg.norm(k)
    white = rng.standard_normal((n + len(k) - 1, channels))
    return np.stack([np.convolve(white[:, i], k, "valid") for i in range(channels)], 1)


def render_clip(spec: ClipSpec, config: SyntheticConfig) -> Clip:
    """Render `spec`: warp the subject's neutral face by the AU field (cv2.remap, backward map) under head
    jitter, then apply illumination drift and sensor noise. Deterministic given (spec, config)."""
    size, n = config.image_size, spec.n_frames
    neutral, lm0 = neutral_face(config.seed, spec.subject_index, size)
    rng = np.random.default_rng(spec.seed)
    k = size / REF_SIZE
    expr = expression_field(spec.aus, lm0, spec.amplitude, spec.asymmetry, size)
    habit = expression_field((spec.habit_au,) if spec.habit_au else (), lm0, spec.habit_amp, 0.0, size)
    s_expr = intensity_profile(n, spec.onset, spec.apex, spec.hold_end, spec.offset, spec.tremor)
    s_habit = np.clip(1 - np.abs(np.arange(n) - spec.habit_frame) / 4, 0, 1) ** 2
    g_expr, g_habit = expr.grid(size, size), habit.grid(size, size)

    jitter = _smooth_noise(rng, n, 3) * spec.jitter_px * k
    angle = jitter[:, 2] / (0.3 * size)  # rotation whose arc at 0.3 * size equals the translation std
    theta = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(0, 1, n) * spec.illum_drift * rng.choice([-1, 1])
    noise = rng.standard_normal((n, size, size, 3), dtype=np.float32) * np.float32(spec.noise_std)

    centre = lm0.mean(0).astype(np.float64)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    plane = ((xs - size / 2) * np.cos(theta) + (ys - size / 2) * np.sin(theta)) / size
    frames = np.empty((n, size, size, 3), np.uint8)
    landmarks = np.empty((n, 68, 2), np.float32)
    for t in range(n):
        c, sn, tx, ty = np.cos(angle[t]), np.sin(angle[t]), jitter[t, 0], jitter[t, 1]
        disp = s_expr[t] * g_expr + np.float32(s_habit[t]) * g_habit
        x0, y0 = xs - np.float32(centre[0] + tx), ys - np.float32(centre[1] + ty)
        map_x = np.float32(c) * x0 + np.float32(sn) * y0 + np.float32(centre[0]) - disp[..., 0]
        map_y = np.float32(-sn) * x0 + np.float32(c) * y0 + np.float32(centre[1]) - disp[..., 1]
        img = cv2.remap(neutral, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        img *= (1 + ramp[t] * (0.5 + plane))[..., None]
        img += noise[t]
        frames[t] = np.clip(np.rint(img), 0, 255)
        # landmarks: solve map(q) = lm0, i.e. q = A(lm0 + D(q)), by fixed-point iteration
        rot = np.array([[c, -sn], [sn, c]])
        q = lm0.astype(np.float64)
        for _ in range(4):
            moved = lm0 + s_expr[t] * expr.at(q) + s_habit[t] * habit.at(q)
            q = (moved - centre) @ rot.T + centre + [tx, ty]
        landmarks[t] = q
    return Clip(frames=frames, landmarks=landmarks)
