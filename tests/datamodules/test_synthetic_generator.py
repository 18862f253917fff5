"""Tests for the synthetic micro-expression generator (datamodules.synthetic)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

import cv2
import numpy as np
import pytest

from datamodules.synthetic.action_units import AU_ANCHORS
from datamodules.synthetic.emotions import HARD_PROTOTYPES, PROTOTYPES, intensity_profile
from datamodules.synthetic.faces import MIRROR, make_identity, neutral_face
from datamodules.synthetic.generator import (
    AU_VOCABULARY, EMOTIONS_3, EMOTIONS_7, TO_3_CLASS, SyntheticConfig, au_multi_hot, generate_specs, render_clip,
)

CFG = SyntheticConfig()
BROWS, MOUTH = list(range(17, 27)), list(range(48, 68))


@pytest.fixture(scope="module")
def specs():
    return generate_specs(CFG)


def _clean(spec, **kw):
    """A copy of `spec` without nuisances (jitter, noise, illumination, habit, tremor)."""
    base = dict(jitter_px=0.0, noise_std=0.0, illum_drift=0.0, habit_au=0, habit_amp=0.0, tremor=0.0, asymmetry=0.0)
    return replace(spec, **(base | kw))


def _motion(clip, spec):
    """Per-landmark ground-truth displacement magnitude, apex vs onset."""
    return np.linalg.norm(clip.landmarks[spec.apex] - clip.landmarks[spec.onset], axis=1)


def _anchor_landmarks(aus):
    idx = {i for au in aus for a in AU_ANCHORS[au] for i in a.landmarks}
    return sorted(idx | {int(MIRROR[i]) for i in idx})


def test_constants():
    assert TO_3_CLASS == {"anger": "negative", "contempt": "negative", "disgust": "negative", "fear": "negative",
                          "sadness": "negative", "happiness": "positive", "surprise": "surprise"}
    assert set(TO_3_CLASS) == set(EMOTIONS_7) and set(TO_3_CLASS.values()) == set(EMOTIONS_3)
    used = {au for table in (PROTOTYPES, HARD_PROTOTYPES) for sets in table.values() for s in sets for au in s}
    assert AU_VOCABULARY == tuple(sorted(used))
    assert au_multi_hot((1, 12)).sum() == 2 and au_multi_hot((1, 12))[AU_VOCABULARY.index(12)] == 1


def test_specs_deterministic_and_valid(specs):
    assert generate_specs(CFG) == specs
    assert generate_specs(replace(CFG, seed=1)) != specs
    assert len({s.sample_id for s in specs}) == len(specs)
    per_subject = Counter(s.subject for s in specs)
    assert len(per_subject) == CFG.n_subjects and min(per_subject.values()) >= 3
    assert 0.7 * CFG.clips_per_subject <= len(specs) / CFG.n_subjects <= 1.3 * CFG.clips_per_subject
    for s in specs:
        assert s.emotion in EMOTIONS_7 and set(s.aus) <= set(AU_VOCABULARY) and list(s.aus) == sorted(s.aus)
        assert 20 <= s.n_frames <= 60
        assert 0 <= s.onset < s.apex <= s.hold_end < s.offset <= s.n_frames - 1
        assert 0.2 <= s.amplitude <= 3.0 and -1 <= s.asymmetry <= 1


def test_render_shapes_deterministic_and_order_independent(specs):
    a, b = specs[0], specs[-1]
    first = [render_clip(s, CFG) for s in (a, b)]
    neutral_face.cache_clear()
    second = [render_clip(s, CFG) for s in (b, a)][::-1]
    for spec, c1, c2 in zip((a, b), first, second):
        assert c1.frames.dtype == np.uint8 and c1.frames.shape == (spec.n_frames, 144, 144, 3)
        assert c1.landmarks.dtype == np.float32 and c1.landmarks.shape == (spec.n_frames, 68, 2)
        np.testing.assert_array_equal(c1.frames, c2.frames)
        np.testing.assert_array_equal(c1.landmarks, c2.landmarks)
    # identity depends only on (seed, subject index), not on the rest of the config
    other = replace(CFG, n_subjects=3, difficulty=0.9)
    assert make_identity(0, a.subject_index) == make_identity(other.seed, a.subject_index)
    np.testing.assert_array_equal(render_clip(a, other).frames, first[0].frames)


def test_subjects_differ_in_appearance(specs):
    by_subject = defaultdict(list)
    for s in specs:
        if len(by_subject[s.subject_index]) < 2:
            by_subject[s.subject_index].append(s)
    frames = {k: [render_clip(s, CFG).frames[0].astype(np.float32) for s in v] for k, v in list(by_subject.items())[:6]}
    within = np.mean([np.abs(f[0] - f[1]).mean() for f in frames.values()])
    between = np.mean([np.abs(frames[i][0] - frames[j][0]).mean() for i in frames for j in frames if i < j])
    assert between > 5 * within, (between, within)
    lms = np.array([neutral_face(CFG.seed, i, 144)[1] for i in frames])
    assert np.ptp(lms[:, 45, 0] - lms[:, 36, 0]) > 2  # eye span (geometry) varies across subjects


@pytest.mark.parametrize("au", AU_VOCABULARY)
def test_au_motion_size_and_locality(specs, au):
    spec = _clean(specs[0], aus=(au,), amplitude=1.3)
    motion = _motion(render_clip(spec, CFG), spec)
    assert 0.2 < motion.max() < 3.0
    lm = neutral_face(CFG.seed, spec.subject_index, 144)[1]
    anchors = lm[_anchor_landmarks((au,))]
    # the most-moved landmark lies near the AU's anchors; landmarks far from them barely move
    dist = np.linalg.norm(lm[:, None] - anchors[None], axis=2).min(1)
    assert dist[motion.argmax()] < 12
    assert motion[dist > 30].max(initial=0) < 0.15 * motion.max()


def test_region_specificity(specs):
    spec12 = _clean(specs[1], aus=(12,))
    m12 = _motion(render_clip(spec12, CFG), spec12)
    assert m12[[48, 54]].min() > 5 * m12[BROWS].max()
    spec12_ = _clean(specs[1], aus=(1, 2))
    m12_ = _motion(render_clip(spec12_, CFG), spec12_)
    assert m12_[BROWS].max() > 5 * m12_[MOUTH].max()
    # asymmetry weakens one side
    spec_a = _clean(specs[1], aus=(12,), asymmetry=0.8)
    m_a = _motion(render_clip(spec_a, CFG), spec_a)
    assert m_a[54] > 3 * m_a[48]


def test_landmarks_follow_pixels(specs):
    """Pixels at the moved landmarks match the neutral face at the neutral landmarks (warp consistency)."""
    spec = _clean(specs[2], aus=(12, 26), amplitude=2.5, jitter_px=1.5)
    clip = render_clip(spec, CFG)
    neutral, lm0 = neutral_face(CFG.seed, spec.subject_index, 144)

    def sample(img, pts):
        p = pts.astype(np.float32)
        return cv2.remap(img.astype(np.float32), p[None, :, 0], p[None, :, 1], cv2.INTER_LINEAR)[0]

    ref = sample(neutral, lm0)
    for t in (spec.apex, spec.n_frames - 1):
        moved = np.abs(sample(clip.frames[t], clip.landmarks[t]) - ref).mean()
        static = np.abs(sample(clip.frames[t], lm0) - ref).mean()
        assert moved < 0.5 * static, (t, moved, static)


def test_intensity_profile():
    s = intensity_profile(40, 5, 12, 16, 30, tremor=0.3)
    assert np.all(s[:6] == 0) and np.all(s[30:] == 0)
    assert s[12] == 1 and s.argmax() == 12
    assert np.all(np.diff(intensity_profile(40, 5, 12, 16, 30)[5:13]) > 0)


def test_hard_samples(specs):
    labels = defaultdict(set)
    for s in specs:
        labels[s.aus].add(s.emotion3)
    hard = [s for s in specs if s.hard]
    assert 0.2 < len(hard) / len(specs) < 0.4
    assert all(len(labels[s.aus]) > 1 for s in hard)
    assert all(len(labels[s.aus]) == 1 for s in specs if not s.hard)
    # dynamics carry the class: contempt-AU12 is more asymmetric and quicker than happiness-AU12,
    # surprise-AU1+2 rises faster and is larger than fear-AU1+2 (pooled over a bigger dataset)
    big = [s for s in generate_specs(replace(CFG, n_subjects=40)) if s.hard]

    def mean(emotion, f):
        return np.mean([f(s) for s in big if s.emotion == emotion])

    assert mean("contempt", lambda s: abs(s.asymmetry)) > mean("happiness", lambda s: abs(s.asymmetry)) + 0.3
    assert mean("contempt", lambda s: s.offset - s.hold_end) < mean("happiness", lambda s: s.offset - s.hold_end)
    assert mean("surprise", lambda s: s.apex - s.onset) < mean("fear", lambda s: s.apex - s.onset)
    assert mean("surprise", lambda s: s.amplitude) > 1.3 * mean("fear", lambda s: s.amplitude)
    assert mean("fear", lambda s: s.tremor) > 0.1 and mean("surprise", lambda s: s.tremor) == 0


def test_class_distribution(specs):
    overall = Counter(s.emotion3 for s in specs)
    assert set(overall) == set(EMOTIONS_3)
    assert 0.45 <= overall["negative"] / len(specs) <= 0.6
    assert overall["negative"] > max(overall["positive"], overall["surprise"])
    table = np.zeros((CFG.n_subjects, 3))
    for s in specs:
        table[s.subject_index, EMOTIONS_3.index(s.emotion3)] += 1
    expected = table.sum(1, keepdims=True) * table.sum(0) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert chi2 > 40.3  # chi-square, 22 dof, p < 0.01: subject and class are strongly dependent
    shares = table.max(1) / table.sum(1)
    assert shares.max() - shares.min() > 0.25


def test_difficulty_changes_noise_amplitude_and_hardness():
    easy, hard = (generate_specs(replace(CFG, difficulty=d)) for d in (0.1, 0.9))

    def mean(specs, f):
        return np.mean([f(s) for s in specs])

    assert mean(hard, lambda s: s.noise_std) > 2 * mean(easy, lambda s: s.noise_std)
    assert mean(hard, lambda s: s.jitter_px) > 2 * mean(easy, lambda s: s.jitter_px)
    assert mean(hard, lambda s: s.amplitude) < 0.8 * mean(easy, lambda s: s.amplitude)
    assert mean(hard, lambda s: s.hard) > mean(easy, lambda s: s.hard) + 0.15
    # in pixels: frame-to-frame change before the onset (noise + jitter + drift) grows with difficulty
    def still_change(spec, config):
        f = render_clip(spec, config).frames[: spec.onset + 1].astype(np.float32)
        return np.abs(np.diff(f, axis=0)).mean()

    assert still_change(hard[0], replace(CFG, difficulty=0.9)) > 2 * still_change(easy[0], replace(CFG, difficulty=0.1))


@pytest.mark.parametrize("aus", [(12,), (1, 2)])
def test_tvl1_flow_peaks_at_au_landmarks(specs, aus):
    spec = _clean(specs[4], aus=aus, amplitude=1.3, noise_std=1.0)
    clip = render_clip(spec, CFG)
    g0, g1 = (cv2.cvtColor(clip.frames[t], cv2.COLOR_RGB2GRAY) for t in (spec.onset, spec.apex))
    mag = np.linalg.norm(cv2.optflow.DualTVL1OpticalFlow_create().calc(g0, g1, None), axis=2)
    lm = clip.landmarks[spec.onset]
    ys, xs = np.mgrid[0:144, 0:144]
    dist = np.linalg.norm(np.stack([xs, ys], -1)[:, :, None] - lm[_anchor_landmarks(aus)], axis=3).min(2)
    interior = np.zeros_like(mag, bool)
    interior[8:-8, 8:-8] = True  # TV-L1 has border artefacts
    near, far = interior & (dist < 8), interior & (dist > 25)
    assert mag[near].mean() > 4 * mag[far].mean(), (mag[near].mean(), mag[far].mean())
    peak = np.unravel_index(np.argmax(np.where(interior, cv2.GaussianBlur(mag, (0, 0), 2), 0)), mag.shape)
    assert dist[peak] < 10
