"""The studies' judges against truths computed independently: a fresh MINE finds the mutual
information of dependent Gaussians and ~0 for independent ones; the correlation measures and the
AU scores against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.studies.judges import (au_probe_scores, macro_auc, mean_abs_cosine, mean_squared_cross_correlation,
                                        mine_judge)


def gaussian_pairs(n: int, rho: float, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x, z standard normal in d dims with corr(x_i, z_i) = rho: I(x; z) = -d/2 log(1 - rho^2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, rho * x + math.sqrt(1 - rho**2) * rng.normal(size=(n, d))


def test_fresh_mine_finds_dependence_and_no_dependence() -> None:
    """rho 0.9 in 2 dims: I = -log(1 - 0.81) = 1.66 nats. The judge is a lower bound scored on pairs it
    never saw, so it must come out between 60 % and 105 % of it; independent features: |I| < 0.1."""
    x, z = gaussian_pairs(600, 0.9, 2, seed=0)
    truth = -math.log(1 - 0.81)
    dependent = mine_judge(x[:400], z[:400], x[400:], z[400:], seed=0)
    assert 0.6 * truth <= dependent <= 1.05 * truth
    x, z = gaussian_pairs(600, 0.0, 2, seed=1)
    assert abs(mine_judge(x[:400], z[:400], x[400:], z[400:], seed=0)) < 0.1


def test_mean_abs_cosine_by_hand() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = np.array([[0.0, 3.0], [-1.0, -1.0], [1.0, 1.0]])
    expected = (0.0 + 1.0 + 2 / (2 * math.sqrt(2))) / 3  # |cos|: 0, 1, 1/sqrt(2)
    assert mean_abs_cosine(a, b) == pytest.approx(expected)


def test_mean_squared_cross_correlation_by_hand() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(30, 2))
    b[:, 1] = 2 * a[:, 0] + 1  # perfectly correlated pair
    total = 0.0
    for i in range(3):
        for j in range(2):
            x, y = a[:, i] - a[:, i].mean(), b[:, j] - b[:, j].mean()
            total += (np.sum(x * y) / math.sqrt(np.sum(x * x) * np.sum(y * y))) ** 2
    assert mean_squared_cross_correlation(a, b) == pytest.approx(total / 6)
    assert mean_squared_cross_correlation(a[:, :1], b[:, 1:]) == pytest.approx(1.0)
    constant = np.ones((30, 1))
    assert mean_squared_cross_correlation(constant, b[:, :1]) == 0.0


def test_macro_auc_skips_aus_without_both_classes_and_au_probe_reads_the_au() -> None:
    targets = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.5], [0.4, 0.2, 0.5], [0.6, 0.9, 0.5]])
    assert macro_auc(targets, scores) == pytest.approx(0.75)  # AU 0 only: pairs (0.9, 0.4) vs (0.2, 0.6): 3 of 4
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 5))
    aus = np.stack([features[:, 0] > 0, rng.random(200) > 0.5, np.ones(200, bool)], 1).astype(float)
    probs = au_probe_scores(features[:100], aus[:100], features[100:])
    assert macro_auc(aus[100:, :1], probs[:, :1]) > 0.95  # AU planted in feature 0
    assert abs(macro_auc(aus[100:, 1:2], probs[:, 1:2]) - 0.5) < 0.15  # AU independent of the features
    assert np.all(probs[:, 2] == 1.0)  # constant in the fit rows: predicts the constant


def test_fresh_mine_at_the_studies_sample_size_orders_dependence() -> None:
    """40 fit + 40 scored pairs of 64-d features that share a 4-d latent with correlation rho (as in the
    studies): independent features score near 0, and the estimate grows with rho."""
    def features(rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        latent = rng.normal(size=(80, 4))
        other = rho * latent + math.sqrt(1 - rho**2) * rng.normal(size=(80, 4))
        return (latent @ rng.normal(size=(4, 64)) + rng.normal(size=(80, 64)),
                other @ rng.normal(size=(4, 64)) + rng.normal(size=(80, 64)))

    def judged(rho: float) -> float:
        return float(np.mean([mine_judge(x[:40], z[:40], x[40:], z[40:]) for x, z in
                              (features(rho, seed) for seed in range(3))]))

    independent, strong = judged(0.0), judged(0.9)
    assert abs(independent) < 0.3 and strong > 1.0 and strong > independent + 1.0


def test_the_mine_judge_measure_pools_a_folds_subjects_and_splits_each_in_half(monkeypatch: pytest.MonkeyPatch) -> None:
    """fold_mine_judge: the fold's training and held-out samples together, each subject's samples half
    fitted, half scored (so every subject is in both halves); planted dependence is found."""
    from experiments.probe.extract import FoldFeatures
    from experiments.studies import measures

    rng = np.random.default_rng(0)
    seen: dict[str, np.ndarray] = {}

    def fake_features(plan, run_dir, k, device, part):
        subjects = np.repeat(["a", "b", "c"], 40) if part == "training" else np.repeat(["d", "e"], 20)
        latent, noise = rng.normal(size=(len(subjects), 2)), rng.normal(size=(len(subjects), 2))
        return FoldFeatures({"f_e": latent, "f_d": 0.95 * latent + math.sqrt(1 - 0.95**2) * noise}, subjects, {},
                            np.arange(len(subjects)))

    def spy(x_fit, z_fit, x_eval, z_eval, seed):
        seen["n"] = np.array([len(x_fit), len(x_eval)])
        return mine_judge(x_fit, z_fit, x_eval, z_eval, seed=seed)

    monkeypatch.setattr(measures, "fold_features", fake_features)
    monkeypatch.setattr(measures, "mine_judge", spy)
    assert measures.fold_mine_judge(None, None, 0) > 1.0  # I = -log(1 - 0.95^2) = 2.3 nats
    assert seen["n"].tolist() == [80, 80]  # 3 x 40 training + 2 x 20 held-out samples, half of each subject's
