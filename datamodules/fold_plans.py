"""Fold plans: for every fold its training, inner-validation and test subjects.

Three builders make a plan from the subjects of a sample table: leave-one-subject-out
(:func:`loso_plan`), subject-independent k-fold balanced by sample count (:func:`kfold_plan`) and a
fixed official split (:func:`official_plan`, e.g. DFME's MEGC 2024 training / testA / testB). A
fold's inner validation subjects (for early stopping or checkpoint choice) are drawn from its
training subjects only, seeded by (split_seed, fold); its test subjects are never selected on.
Subjects are text throughout: '006' and '6' are two different subjects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from datamodules.errors import MERError

PlanKind = Literal["loso", "kfold", "official"]
TRAINING_SET = "training"
"""The name of the official set a fixed split trains on; every other set is a test set."""


def natural_key(text: str) -> tuple[list[object], str]:
    """Sort key that orders 'sub2' before 'sub10' (and, as text, '006' before '6')."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)], text


def natural_sorted(subjects: Sequence[object]) -> tuple[str, ...]:
    return tuple(sorted({str(s) for s in subjects}, key=natural_key))


@dataclass(frozen=True)
class Fold:
    """One fold: the subjects the model trains on, those it validates on, those it is tested on."""

    train_subjects: tuple[str, ...]
    val_subjects: tuple[str, ...]
    test_subjects: tuple[str, ...]


@dataclass(frozen=True)
class FoldPlan:
    """Every fold of a run. ``kind``: which builder made it; ``split_seed``: its seed."""

    kind: PlanKind
    split_seed: int
    folds: tuple[Fold, ...]

    def rows(self, k: int, row_subjects: np.ndarray) -> dict[str, np.ndarray]:
        """Row positions of train / val / test of fold `k`, given each row's subject (text)."""
        fold = self.folds[k]
        positions = np.arange(len(row_subjects))
        return {name: positions[np.isin(row_subjects, list(subjects))] for name, subjects in
                (("train", fold.train_subjects), ("val", fold.val_subjects), ("test", fold.test_subjects))}

    def record(self, sample_keys: np.ndarray, row_subjects: np.ndarray, row_sets: np.ndarray | None = None) -> dict[str, Any]:
        """The plan as fold_plan.json: the data's number of samples, per fold its subjects by role and its
        test samples ('<dataset>/<sample_id>'); under an official split also each test set's samples."""
        folds = []
        for k, fold in enumerate(self.folds):
            test = self.rows(k, row_subjects)["test"]
            entry: dict[str, Any] = {"fold": k, "train_subjects": list(fold.train_subjects),
                                     "val_subjects": list(fold.val_subjects), "test_subjects": list(fold.test_subjects),
                                     "test_samples": [str(key) for key in sample_keys[test]]}
            if row_sets is not None:
                entry["test_sets"] = {name: [str(key) for key in sample_keys[test][row_sets[test] == name]]
                                      for name in sorted(set(row_sets[test].tolist()))}
            folds.append(entry)
        return {"kind": self.kind, "split_seed": self.split_seed, "n_samples": len(sample_keys), "folds": folds}


def with_validation(kind: PlanKind, folds: Sequence[tuple[Sequence[str], Sequence[str]]], val_subjects: int,
                    seed: int) -> FoldPlan:
    """A plan from (candidate training subjects, test subjects) per fold: `val_subjects` of each fold's
    training subjects, drawn with the generator seeded by (seed, fold), become its validation subjects."""
    planned = []
    for k, (pool, test) in enumerate(folds):
        train = natural_sorted(pool)
        if not 0 <= val_subjects < len(train):
            raise MERError(f"val_subjects={val_subjects} is invalid: fold {k} has {len(train)} training subjects, "
                           f"use 0..{len(train) - 1}")
        rng = np.random.default_rng([seed, k])
        val = natural_sorted(rng.choice(train, size=val_subjects, replace=False).tolist()) if val_subjects else ()
        planned.append(Fold(tuple(s for s in train if s not in val), val, natural_sorted(test)))
    return FoldPlan(kind, seed, tuple(planned))


def loso_plan(subjects: Sequence[str], val_subjects: int = 0, seed: int = 0) -> FoldPlan:
    """Leave-one-subject-out: fold k tests the k-th subject in natural order and trains on the others."""
    ordered = natural_sorted(subjects)
    return with_validation("loso", [([s for s in ordered if s != test], [test]) for test in ordered], val_subjects, seed)


def balanced_subject_folds(sample_counts: Mapping[str, int], k: int, seed: int) -> list[list[str]]:
    """Subjects grouped into `k` folds of near-equal sample count, each subject in exactly one fold.

    Greedy: subjects by descending sample count (ties in a seeded random order), each to the fold
    with the fewest samples so far (ties: the lower fold). The largest and smallest fold then
    differ by at most one subject's count. Subjects within a fold are naturally sorted.
    """
    names = list(sample_counts)
    shuffled = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    order = sorted(shuffled, key=lambda name: -sample_counts[name])  # stable: keeps the seeded tie order
    folds: list[list[str]] = [[] for _ in range(k)]
    totals = [0] * k
    for name in order:
        smallest = totals.index(min(totals))
        folds[smallest].append(name)
        totals[smallest] += sample_counts[name]
    return [sorted(fold, key=natural_key) for fold in folds]


def kfold_plan(sample_counts: Mapping[str, int], k: int, val_subjects: int = 0, seed: int = 0) -> FoldPlan:
    """Subject-independent k-fold (our reading of Xie et al. 2022's "five-fold cross-validation"; the
    paper does not say how samples were split): every subject tested in exactly one fold,
    folds balanced by sample count (:func:`balanced_subject_folds`); `sample_counts`: samples per subject."""
    counts = {str(s): int(n) for s, n in sample_counts.items()}
    ordered = natural_sorted(counts)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= len(ordered):
        raise MERError(f"k_folds={k!r} is invalid: use 2..{len(ordered)} (this dataset has {len(ordered)} subjects) "
                       "or null for leave-one-subject-out")
    counts = {s: counts[s] for s in ordered}
    tests = balanced_subject_folds(counts, int(k), seed)
    return with_validation("kfold", [([s for s in ordered if s not in test], test) for test in tests], val_subjects, seed)


def official_plan(row_subjects: Sequence[str], row_sets: Sequence[str], val_subjects: int = 0, seed: int = 0) -> FoldPlan:
    """A fixed official split as one fold: train on the subjects of the rows of set TRAINING_SET, test on
    the subjects of every other set (all test sets together; each sample's set is kept by the caller).
    The sets must be subject-disjoint from the training set, else one error naming the shared subjects."""
    subjects, sets = np.asarray(row_subjects, dtype=str), np.asarray(row_sets, dtype=object)
    training = sets == TRAINING_SET
    if not training.any() or training.all():
        found = ", ".join(natural_sorted(set(sets.tolist()))) or "none"
        raise MERError(f"an official split needs samples of the '{TRAINING_SET}' set and of at least one test set "
                       f"(found sets: {found})")
    train, test = natural_sorted(subjects[training]), natural_sorted(subjects[~training])
    shared = sorted(set(train) & set(test), key=natural_key)
    if shared:
        raise MERError(f"the official split is not subject-disjoint: subject(s) {', '.join(shared[:8])} appear in "
                       f"'{TRAINING_SET}' and in a test set; fix the sheets (a subject tested on must never be trained on)")
    return with_validation("official", [(train, test)], val_subjects, seed)
