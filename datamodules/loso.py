"""Subject-independent folds as a LightningDataModule: leave-one-subject-out, k-fold or an official split.

The datamodule's fold plan (``datamodules.fold_plans``) gives every fold its training, inner
validation and test subjects; ``split()`` returns their rows. LOSO (the default) holds out one
subject per fold; ``k_folds=k`` groups the subjects into k folds balanced by sample count (our
subject-independent reading of Xie et al. 2022's "five-fold cross-validation"); a source with a fixed official split (DFME's
MEGC 2024 training/testA/testB) makes one fold of it. An optional inner validation split (for early
stopping or checkpoint choice) is carved from the training subjects only; the held-out subjects are
never used for any selection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader, Dataset

from datamodules.errors import MERError

from .datasets import WithIdentity
from .fold_plans import FoldPlan, kfold_plan, loso_plan, natural_key, official_plan

REQUIRED_COLUMNS = ("sample_id", "subject", "dataset", "label")


class LOSODataModule(L.LightningDataModule, ABC):
    """Base class: subclasses provide the sample table, the class names and a dataset factory.

    Args:
        fold: index into the fold plan (0..num_folds-1); under LOSO fold k holds out the k-th
            subject in natural order; an official split has one fold, 0.
        test_subject: hold out the fold of this subject instead (compared as text: on SAMM
            '006' is subject 006, never index 6). Giving a non-zero `fold` as well is an error
            unless it is that subject's fold.
        k_folds: None = leave-one-subject-out (one fold per subject); k = subject-independent
            k-fold, all samples of a subject in one fold, folds balanced by sample count.
        val_subjects: number of training subjects held out as an inner validation split
            (0 = none: train for a fixed number of epochs).
        batch_size: samples per batch.
        num_workers: dataloader worker processes.
        split_seed: seed of the k-fold plan and of the choice of inner validation subjects
            (drawn per fold from (split_seed, fold)).
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
        least = {"batch_size": (batch_size, 1), "num_workers": (num_workers, 0), "val_subjects": (val_subjects, 0)}
        bad = [f"{name} {value} (give at least {low})" for name, (value, low) in least.items() if value < low]
        if bad:
            raise MERError(f"data.init_args: {', '.join(bad)}")
        self.fold = fold
        self.test_subject = test_subject
        self.k_folds = k_folds
        self.val_subjects = val_subjects
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split_seed = split_seed
        self._table: pd.DataFrame | None = None
        self._fold_plans: dict[tuple[int | None, int, int], FoldPlan] = {}  # (k_folds, val_subjects, split_seed) -> plan
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

    def official_sets(self) -> np.ndarray | None:
        """Each table row's set of a fixed official split (``fold_plans.TRAINING_SET`` or a test set's
        name), or None when the folds are made from the subjects (LOSO, k-fold). Sources with an
        official split override this."""
        return None

    def fold_plan(self) -> FoldPlan:
        """The fold plan: official split, LOSO or k-fold (computed once per k_folds, val_subjects and split_seed)."""
        key = (self.k_folds, self.val_subjects, self.split_seed)
        if key not in self._fold_plans:
            self._fold_plans[key] = self._build_fold_plan()
        return self._fold_plans[key]

    def _build_fold_plan(self) -> FoldPlan:
        sets = self.official_sets()
        if sets is not None:
            if self.k_folds is not None:
                raise MERError(f"k_folds={self.k_folds!r} and the official split exclude each other: set k_folds null "
                               "to test on the official test sets, or turn the official split off for k-fold")
            return official_plan(self.row_subjects, sets, self.val_subjects, self.split_seed)
        if self.k_folds is None:
            return loso_plan(self.subjects, self.val_subjects, self.split_seed)
        counts = pd.Series(self.row_subjects).value_counts()
        return kfold_plan({s: int(counts[s]) for s in self.subjects}, self.k_folds, self.val_subjects, self.split_seed)

    @property
    def sample_keys(self) -> np.ndarray:
        """'<dataset>/<sample_id>' of every table row: a sample's key in fold_plan.json."""
        return (self.table["dataset"].astype(str) + "/" + self.table["sample_id"].astype(str)).to_numpy()

    def fold_plan_record(self) -> dict[str, Any]:
        """The fold plan as the runner saves it (fold_plan.json), test samples and test sets included."""
        return self.fold_plan().record(self.sample_keys, self.row_subjects, self.official_sets())

    @property
    def num_folds(self) -> int:
        """Number of folds: the number of subjects under LOSO, k_folds under k-fold, 1 under an official split."""
        return len(self.fold_plan().folds)

    def fold_test_subjects(self, k: int) -> list[str]:
        """The held-out subjects of fold `k` (one under LOSO), naturally sorted."""
        n = self.num_folds
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise MERError(f"fold {k!r} is not a fold index: use 0..{n - 1}, or test_subject to name a subject")
        if not 0 <= k < n:
            raise MERError(f"fold {k} is out of range: this dataset has {n} folds, use 0..{n - 1}")
        return list(self.fold_plan().folds[k].test_subjects)

    @property
    def fold_index(self) -> int:
        """The selected fold: `fold`, or the fold holding `test_subject` when that is given."""
        if self.test_subject is None:
            self.fold_test_subjects(self.fold)  # validates the index
            return int(self.fold)
        subject = str(self.test_subject)
        index = next((k for k, fold in enumerate(self.fold_plan().folds) if subject in fold.test_subjects), None)
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
        """Row positions of train / val / test of the selected fold, as its fold plan says."""
        return self.fold_plan().rows(self.fold_index, self.row_subjects)

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
