"""The linear identity probe: which subject does a feature vector belong to?

Per fold and per feature: each training subject's samples are split in two (:func:`split_per_subject`),
a logistic regression on standardised features is fitted on one part and predicts the subject of
the other. Folds are pooled by their held-out (true, predicted) pairs (:func:`pool_folds`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

MAX_ITER = 2000  # lbfgs iterations (our choice; standardised features converge well before)
C = 1.0  # inverse L2 strength (scikit-learn's default, our choice)


@dataclass(frozen=True)
class SubjectSplit:
    """Sample positions of the fit and held-out parts, the subjects in both (the probe's classes)
    and those left out (< 2 samples)."""

    fit: np.ndarray
    heldout: np.ndarray
    subjects: list[str]
    skipped: list[str]


def split_per_subject(subjects: np.ndarray, seed: int) -> SubjectSplit:
    """Each subject's samples in a seeded random order: the first ceil(n/2) to the fit part, the rest
    held out (our choice: half/half, the odd sample to fitting). Subjects with < 2 samples are skipped."""
    rng = np.random.default_rng(seed)
    fit: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    heldout: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    probed: list[str] = []
    skipped: list[str] = []
    for subject in sorted(set(subjects.tolist())):
        positions = np.flatnonzero(subjects == subject)
        if len(positions) < 2:
            skipped.append(subject)
            continue
        order = rng.permutation(positions)
        n_fit = -(-len(order) // 2)
        fit.append(order[:n_fit])
        heldout.append(order[n_fit:])
        probed.append(subject)
    return SubjectSplit(np.sort(np.concatenate(fit)), np.sort(np.concatenate(heldout)), probed, skipped)


def fit_and_predict(features: np.ndarray, subjects: np.ndarray, split: SubjectSplit) -> tuple[np.ndarray, bool]:
    """Subjects predicted for the held-out part by a logistic regression fitted on the fit part
    (features standardised with the fit part's mean and standard deviation); and whether lbfgs converged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(features[split.fit], subjects[split.fit])
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return probe.predict(features[split.heldout]), converged


def balanced_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    """Mean over the true classes of the fraction of their samples predicted as themselves."""
    classes = np.unique(true)
    return float(np.mean([np.mean(pred[true == c] == c) for c in classes]))


@dataclass(frozen=True)
class FoldProbe:
    """One feature in one fold: held-out subjects, their predictions, the probe's classes."""

    fold: int
    true: np.ndarray
    pred: np.ndarray
    subjects: list[str]
    n_fit: int
    converged: bool

    @property
    def chance(self) -> float:
        return 1.0 / len(self.subjects)

    def summary(self) -> dict[str, float | int | bool]:
        return {"fold": self.fold, "balanced_accuracy": balanced_accuracy(self.true, self.pred),
                "chance": self.chance, "n_subjects": len(self.subjects), "n_fit": self.n_fit,
                "n_heldout": len(self.true), "converged": self.converged}


def probe_fold(fold: int, features: np.ndarray, subjects: np.ndarray, split: SubjectSplit) -> FoldProbe:
    """The probe of one feature (N, D) in one fold, fitted and scored on `split` of its samples."""
    pred, converged = fit_and_predict(features, subjects, split)
    return FoldProbe(fold, subjects[split.heldout], pred, split.subjects, len(split.fit), converged)


def chance_level(folds: list[FoldProbe]) -> tuple[float, float]:
    """Mean and standard deviation of the pooled balanced accuracy of a probe that guesses uniformly
    among each fold's subjects. Subject s's hits in fold k are then Binomial(n_sk, 1/m_k) (n_sk: its
    held-out samples there, m_k: subjects probed in fold k), independent, so its pooled recall has mean
    sum_k n_sk/m_k / n_s and variance sum_k n_sk (1/m_k)(1 - 1/m_k) / n_s^2 (n_s = sum_k n_sk); the balanced
    accuracy is the mean of the S subjects' recalls. The mean is 1/m when every fold probes m subjects."""
    hits: dict[str, float] = {}
    variance: dict[str, float] = {}
    counts: dict[str, int] = {}
    for fold in folds:
        p = fold.chance
        for subject in fold.true.tolist():
            hits[subject] = hits.get(subject, 0.0) + p
            variance[subject] = variance.get(subject, 0.0) + p * (1 - p)
            counts[subject] = counts.get(subject, 0) + 1
    subjects = list(counts)
    mean = float(np.mean([hits[s] / counts[s] for s in subjects]))
    sd = float(np.sqrt(sum(variance[s] / counts[s] ** 2 for s in subjects)) / len(subjects))
    return mean, sd


def pool_folds(folds: list[FoldProbe]) -> dict[str, float | int]:
    """Balanced accuracy of all folds' held-out (true, predicted) pairs together, its chance level and
    that level's standard deviation (:func:`chance_level`), their ratio; the mean of the per-fold scores
    as a diagnostic."""
    true = np.concatenate([f.true for f in folds])
    pred = np.concatenate([f.pred for f in folds])
    score, (chance, chance_sd) = balanced_accuracy(true, pred), chance_level(folds)
    return {"balanced_accuracy": score, "chance": chance, "chance_sd": chance_sd, "ratio": score / chance,
            "mean_fold_balanced_accuracy": float(np.mean([balanced_accuracy(f.true, f.pred) for f in folds])),
            "n_subjects": len(np.unique(true)), "n_heldout": len(true)}
