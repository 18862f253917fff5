"""Subject-independent folds as a LightningDataModule: leave-one-subject-out or k-fold.

A fold holds out a set of test subjects: test = exactly their samples, train = every other
subject's. LOSO (the default) holds out one subject per fold; ``k_folds=k`` groups the subjects
into k folds balanced by sample count (the subject-independent k-fold of Xie et al. 2022, §4.1).
An optional inner validation split (for early stopping) is carved from the training subjects
only; the held-out subjects are never used for any selection.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

import lightning as L
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader, Dataset

from datamodules.errors import MERError

from .datasets import WithIdentity

REQUIRED_COLUMNS = ("sample_id", "subject", "dataset", "label")


def natural_key(text: str) -> list[object]:
    """Sort key that orders 'sub2' before 'sub10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def balanced_subject_folds(sample_counts: dict[str, int], k: int, seed: int) -> list[list[str]]:
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


class LOSODataModule(L.LightningDataModule, ABC):
    """Base class: subclasses provide the sample table, the class names and a dataset factory.

    Args:
        fold: index into the fold plan (0..num_folds-1); under LOSO fold k holds out the k-th
            subject in natural order.
        test_subject: hold out the fold of this subject instead (compared as text: on SAMM
            '006' is subject 006, never index 6). Giving a non-zero `fold` as well is an error
            unless it is that subject's fold.
        k_folds: None = leave-one-subject-out (one fold per subject); k = subject-independent
            k-fold, all samples of a subject in one fold, folds balanced by sample count.
        val_subjects: number of training subjects held out as an inner validation split
            (0 = none: train for a fixed number of epochs).
        batch_size: samples per batch.
        num_workers: dataloader worker processes.
        split_seed: seed of the k-fold plan and of the choice of inner validation subjects.
    """

    def __init__(
        self,
        fold: int = 0,
        test_subject: str | None = None,
        k_folds: int | None = None,
        val_subjects: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        self.fold = fold
        self.test_subject = test_subject
        self.k_folds = k_folds
        self.val_subjects = val_subjects
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split_seed = split_seed
        self._table: pd.DataFrame | None = None
        self._fold_plans: dict[tuple[int | None, int], list[tuple[str, ...]]] = {}  # (k_folds, split_seed) -> plan
        self.datasets: dict[str, Dataset] = {}

    # -- what a concrete data source provides -------------------------------------------------
    @property
    @abstractmethod
    def class_names(self) -> tuple[str, ...]:
        """Names of the classes, in label order."""

    @property
    def num_aus(self) -> int:
        """Number of AU labels per sample (0 when the source has no AU annotation)."""
        return 0

    @abstractmethod
    def load_table(self) -> pd.DataFrame:
        """The sample table (columns REQUIRED_COLUMNS at least), one row per sample."""

    @abstractmethod
    def make_dataset(self, rows: np.ndarray) -> Dataset:
        """A dataset over the given row positions of the table; items are dicts with 'index'."""

    def check_inputs(self) -> None:
        """Raise one MERError listing every unusable input file; called before any output exists.

        The base has nothing to check; sources that read files override it (cheaply: headers,
        sizes and listings, not the training data itself where that can be avoided).
        """

    # -- folds -------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def table(self) -> pd.DataFrame:
        if self._table is None:
            table = self.load_table().reset_index(drop=True)
            missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
            if missing:
                raise MERError(f"{type(self).__name__}: sample table lacks columns {missing}")
            self._table = table
        return self._table

    @property
    def row_subjects(self) -> np.ndarray:
        """The subject id (text) of every table row."""
        return self.table["subject"].astype(str).to_numpy()

    @property
    def subjects(self) -> list[str]:
        """All subjects, naturally sorted."""
        return sorted(set(self.row_subjects), key=natural_key)

    def fold_plan(self) -> list[list[str]]:
        """The test subjects of every fold, fold by fold (computed once per k_folds and split_seed)."""
        key = (self.k_folds, self.split_seed)
        if key not in self._fold_plans:
            self._fold_plans[key] = [tuple(fold) for fold in self._compute_fold_plan()]
        return [list(fold) for fold in self._fold_plans[key]]

    def _compute_fold_plan(self) -> list[list[str]]:
        subjects = self.subjects
        if self.k_folds is None:
            return [[subject] for subject in subjects]
        if isinstance(self.k_folds, bool) or not isinstance(self.k_folds, int) or not 2 <= self.k_folds <= len(subjects):
            raise MERError(f"k_folds={self.k_folds!r} is invalid: use 2..{len(subjects)} (this dataset has "
                           f"{len(subjects)} subjects) or null for leave-one-subject-out")
        counts = pd.Series(self.row_subjects).value_counts()
        return balanced_subject_folds({s: int(counts[s]) for s in subjects}, self.k_folds, self.split_seed)

    @property
    def num_folds(self) -> int:
        """Number of folds: the number of subjects under LOSO, else k_folds."""
        return len(self.fold_plan())

    def fold_test_subjects(self, k: int) -> list[str]:
        """The held-out subjects of fold `k` (one under LOSO), naturally sorted."""
        plan = self.fold_plan()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise MERError(f"fold {k!r} is not a fold index: use 0..{len(plan) - 1}, or test_subject to name a subject")
        if not 0 <= k < len(plan):
            raise MERError(f"fold {k} is out of range: this dataset has {len(plan)} folds, use 0..{len(plan) - 1}")
        return list(plan[k])

    @property
    def fold_index(self) -> int:
        """The selected fold: `fold`, or the fold holding `test_subject` when that is given."""
        if self.test_subject is None:
            self.fold_test_subjects(self.fold)  # validates the index
            return int(self.fold)
        plan = self.fold_plan()
        subject = str(self.test_subject)
        index = next((k for k, fold in enumerate(plan) if subject in fold), None)
        if index is None:
            subjects = self.subjects
            raise MERError(f"test_subject '{subject}' is not a subject of this dataset; choose one of "
                           f"{', '.join(subjects[:8])}{', ...' if len(subjects) > 8 else ''} ({len(subjects)} subjects)")
        if self.fold not in (0, index):
            raise MERError(f"fold {self.fold} and test_subject '{subject}' disagree: '{subject}' is held out by fold "
                           f"{index}; give only one of them")
        return index

    @property
    def test_subjects(self) -> list[str]:
        """The held-out subjects of the selected fold."""
        return self.fold_test_subjects(self.fold_index)

    def split(self) -> dict[str, np.ndarray]:
        """Row positions of train / val / test for the selected fold."""
        subject_of = self.row_subjects
        fold = self.fold_index
        test = self.fold_test_subjects(fold)
        train_subjects = [s for s in self.subjects if s not in test]
        if not 0 <= self.val_subjects < len(train_subjects):
            raise MERError(f"val_subjects={self.val_subjects} is invalid: fold {fold} has {len(train_subjects)} training "
                           f"subjects, use 0..{len(train_subjects) - 1}")
        rng = np.random.default_rng([self.split_seed, fold])
        val = rng.choice(train_subjects, size=self.val_subjects, replace=False).tolist() if self.val_subjects else []
        rows = np.arange(len(subject_of))
        return {
            "train": rows[~np.isin(subject_of, test) & ~np.isin(subject_of, val)],
            "val": rows[np.isin(subject_of, val)],
            "test": rows[np.isin(subject_of, test)],
        }

    @property
    def identity_subjects(self) -> list[str]:
        """The subjects the model trains on in the selected fold (naturally sorted): identity classes."""
        return self._identity_subjects(self.split())

    def _identity_subjects(self, split: dict[str, np.ndarray]) -> list[str]:
        return sorted(set(self.row_subjects[split["train"]]), key=natural_key)

    @property
    def num_identities(self) -> int:
        """Number of identity classes: the training subjects of the selected fold (never a test subject)."""
        return len(self.identity_subjects)

    def identities(self, rows: np.ndarray, split: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Identity label of each row: its subject's index among `identity_subjects`, -1 for other subjects.
        `split`: this fold's split() when the caller already has it."""
        classes = self._identity_subjects(self.split() if split is None else split)
        index = {subject: i for i, subject in enumerate(classes)}
        return np.array([index.get(subject, -1) for subject in self.row_subjects[np.asarray(rows, dtype=np.int64)]],
                        dtype=np.int64)

    # -- Lightning hooks -----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        split = self.split()
        self.datasets = {name: WithIdentity(self.make_dataset(rows), rows, self.identities(rows, split))
                         for name, rows in split.items()}

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[name],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if self.val_subjects else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
