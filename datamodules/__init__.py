"""LightningDataModules: leave-one-subject-out folds over prepared micro-expression data."""

from .loso import LOSODataModule
from .megc2019 import MEGC2019CompositeDataModule
from .synthetic.datamodule import SyntheticDataModule

__all__ = ["LOSODataModule", "MEGC2019CompositeDataModule", "SyntheticDataModule"]
