"""Leave-one-subject-out folds as a LightningDataModule.

A fold is one held-out subject: test = exactly that subject's samples, train = every other
subject's. An optional inner validation split (for early stopping) is carved from the training
subjects only; the held-out subject is never used for any selection.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

import lightning as L
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader, Dataset

from datamodules.errors import MERError

REQUIRED_COLUMNS = ("sample_id", "subject", "dataset", "label")


def natural_key(text: str) -> list[object]:
    """Sort key that orders 'sub2' before 'sub10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


class LOSODataModule(L.LightningDataModule, ABC):
    """Base class: subclasses provide the sample table, the class names and a dataset factory.

    Args:
        fold: index into the sorted subject list, or a subject id.
        val_subjects: number of training subjects held out as an inner validation split
            (0 = none: train for a fixed number of epochs).
        batch_size: samples per batch.
        num_workers: dataloader worker processes.
        split_seed: seed for choosing the inner validation subjects.
    """

    def __init__(
        self,
        fold: int | str = 0,
        val_subjects: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        self.fold = fold
        self.val_subjects = val_subjects
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split_seed = split_seed
        self._table: pd.DataFrame | None = None
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
    def subjects(self) -> list[str]:
        """All subjects, naturally sorted; fold k holds out subjects[k]."""
        return sorted(self.table["subject"].astype(str).unique(), key=natural_key)

    def fold_subject(self) -> str:
        """The held-out subject of this fold (fold given as an index or a subject id)."""
        subjects = self.subjects
        fold = self.fold
        if isinstance(fold, str) and not fold.lstrip("-").isdigit():
            if fold not in subjects:
                raise MERError(f"fold '{fold}' is not a subject of this dataset; choose one of {subjects[:5]}... or an index 0..{len(subjects) - 1}")
            return fold
        index = int(fold)
        if not 0 <= index < len(subjects):
            raise MERError(f"fold {index} is out of range: this dataset has {len(subjects)} subjects, use 0..{len(subjects) - 1}")
        return subjects[index]

    def split(self) -> dict[str, np.ndarray]:
        """Row positions of train / val / test for this fold."""
        subject_of = self.table["subject"].astype(str).to_numpy()
        test_subject = self.fold_subject()
        train_subjects = [s for s in self.subjects if s != test_subject]
        if self.val_subjects >= len(train_subjects):
            raise MERError(f"val_subjects={self.val_subjects} leaves no training subject ({len(train_subjects)} available)")
        rng = np.random.default_rng([self.split_seed, self.subjects.index(test_subject)])
        val = set(rng.choice(train_subjects, size=self.val_subjects, replace=False).tolist()) if self.val_subjects else set()
        rows = np.arange(len(subject_of))
        return {
            "train": rows[(subject_of != test_subject) & ~np.isin(subject_of, list(val))],
            "val": rows[np.isin(subject_of, list(val))],
            "test": rows[subject_of == test_subject],
        }

    # -- Lightning hooks -----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.datasets = {name: self.make_dataset(rows) for name, rows in self.split().items()}

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
