"""LightningDataModules: leave-one-subject-out folds over prepared micro-expression data.

Exports are imported on first use, so that preparation workers (which need only the face and
flow code) start without importing Lightning.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "LOSODataModule": ".loso",
    "MEGC2019CompositeDataModule": ".megc2019",
    "SyntheticDataModule": ".synthetic.datamodule",
    "ReleaseDataModule": ".databases.datamodule",
    "CASME2DataModule": ".databases.per_database",
    "SAMMDataModule": ".databases.per_database",
    "SMICDataModule": ".databases.per_database",
    "CASME3DataModule": ".databases.per_database",
    "DFMEDataModule": ".databases.per_database",
    "MMEWDataModule": ".databases.per_database",
    "CompositeReleaseDataModule": ".databases.composite",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'datamodules' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name], __name__), name)
