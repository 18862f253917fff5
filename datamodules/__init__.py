"""LightningDataModules: leave-one-subject-out folds over prepared micro-expression data."""

from .loso import LOSODataModule
from .megc2019 import MEGC2019CompositeDataModule

__all__ = ["LOSODataModule", "MEGC2019CompositeDataModule"]
