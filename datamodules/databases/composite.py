"""The MEGC2019 composite set (CDE) built from the three releases on disk instead of the public
flow images: CASME II + SAMM + SMIC-HS under the 'cde' protocol (442 samples, 68 subjects).

Each source is a ReleaseDataModule prepared into its own cache; the composite's subjects are
``<dataset>_<subject>`` and its 'dataset' column gives UF1/UAR per source database. AU
vocabularies differ between the databases (SMIC has none), so the composite carries no AU labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.errors import MERError

from ..datasets import PreparedClipDataset
from ..loso import LOSODataModule
from .datamodule import ReleaseDataModule


class CompositeReleaseDataModule(LOSODataModule):
    """LOSO over the union of several releases that share one class protocol.

    The fold and loader options (fold, test_subject, k_folds, val_subjects, batch_size, num_workers,
    split_seed) are LOSODataModule's.

    Args:
        sources: one ReleaseDataModule per database (e.g. CASME2DataModule, SAMMDataModule,
            SMICDataModule, each with protocol 'cde'); their fold/batch arguments are ignored.
    """

    def __init__(
        self,
        sources: list[ReleaseDataModule],
        fold: int = 0,
        test_subject: str | None = None,
        k_folds: int | None = None,
        val_subjects: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        split_seed: int = 0,
    ) -> None:
        super().__init__(fold=fold, test_subject=test_subject, k_folds=k_folds, val_subjects=val_subjects,
                         batch_size=batch_size, num_workers=num_workers, split_seed=split_seed)
        if not sources:
            raise MERError("a composite needs at least one source release")
        names = {source.class_names for source in sources}
        if len(names) != 1:
            raise MERError(f"the sources' protocols have different classes {sorted(names)}; use protocol 'cde' for each")
        self.sources = sources

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.sources[0].class_names

    def check_inputs(self) -> None:
        """Every source's inputs; one error naming the problems of all sources."""
        problems = []
        for source in self.sources:
            try:
                source.check_inputs()
            except MERError as err:
                problems.append(f"{source.dataset}: {err}")
        if problems:
            raise MERError(" | ".join(problems))

    def prepare_data(self) -> None:
        for source in self.sources:
            source.prepare_data()

    def load_table(self) -> pd.DataFrame:
        parts = []
        for i, source in enumerate(self.sources):
            part = source.cache.index.copy()
            part["subject"] = part["dataset"] + "_" + part["subject"].astype(str)
            part["source"], part["source_row"] = i, np.arange(len(part))
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def make_dataset(self, rows: np.ndarray) -> Dataset:
        table = self.table
        parts = [
            PreparedClipDataset(s.cache, np.arange(len(s.cache.index)), s.cache.index["label"].to_numpy(), s.with_frames, s.composite_apex)
            for s in self.sources
        ]
        return CompositeDataset(parts, table["source"].to_numpy()[rows], table["source_row"].to_numpy()[rows], np.asarray(rows))


class CompositeDataset(Dataset):
    """Items of several prepared caches, indexed by the composite table's rows; no AU labels."""

    def __init__(self, parts: list[PreparedClipDataset], source: np.ndarray, source_row: np.ndarray, rows: np.ndarray) -> None:
        self.parts, self.source, self.source_row, self.rows = parts, source, source_row, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = self.parts[int(self.source[i])][int(self.source_row[i])]
        item.update(index=torch.tensor(int(self.rows[i])), au=torch.zeros(0), au_mask=torch.tensor(False))
        return item
