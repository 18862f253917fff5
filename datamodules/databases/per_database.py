"""One thin DataModule per database: its name, default sheet, protocol and release layout.

Every other argument is ReleaseDataModule's (crop size, frames, TV-L1, cache, folds, ...).
A relative `annotations` path is looked up as given, then in `root` and its parent folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import MERError

from ..fold_plans import TRAINING_SET
from .datamodule import ReleaseDataModule


class CASME2DataModule(ReleaseDataModule):
    """CASME II: 26 subjects, 255 coded clips at 200 fps. Protocols '5class' (the classes Xie et al. list) and 'cde'."""

    def __init__(self, root: str, annotations: str | list[str] = "CASME2-coding-20140508.xlsx", protocol: str = "5class",
                 release: str | None = "cropped", **kwargs: Any) -> None:
        super().__init__("casme2", root, protocol, annotations, release, **kwargs)


class SAMMDataModule(ReleaseDataModule):
    """SAMM: 159 micro-expressions of 29 subjects at 200 fps. Protocols '5class' (the common MEGC 5-class
    set, not Xie et al.'s own: see ``datamodules.annotations.databases.SAMM``) and 'cde'."""

    def __init__(self, root: str, annotations: str | list[str] = "SAMM_Micro_FACS_Codes_v2.xlsx", protocol: str = "5class",
                 release: str | None = "original", **kwargs: Any) -> None:
        super().__init__("samm", root, protocol, annotations, release, **kwargs)


class SMICDataModule(ReleaseDataModule):
    """SMIC-HS: 164 clips of 16 subjects at 100 fps, negative/positive/surprise ('cde')."""

    def __init__(self, root: str, annotations: str | list[str] = "smic_apex.xlsx", protocol: str = "cde",
                 release: str | None = "raw", **kwargs: Any) -> None:
        super().__init__("smic", root, protocol, annotations, release, **kwargs)


class CASME3DataModule(ReleaseDataModule):
    """CAS(ME)³ Part A: 860 clips, 94 subjects, 30 fps. Protocols '3class' (699), '4class', '7class' (860) (MEDN Table II)."""

    def __init__(self, root: str, annotations: str | list[str] = "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx",
                 protocol: str = "3class", release: str | None = "original", **kwargs: Any) -> None:
        super().__init__("casme3", root, protocol, annotations, release, **kwargs)


DFME_OFFICIAL_SHEETS: dict[str, str] = {
    TRAINING_SET: "training_full_with_AU.xlsx", "testA": "testA_full_with_AU.xlsx", "testB": "testB_full_with_AU.xlsx",
}
"""MEGC 2024 (CCAC) DFME split: its sets and the sheets that list them (176, 42 and 41 subjects, disjoint)."""


class DFMEDataModule(ReleaseDataModule):
    """DFME (CCAC 2024 public subset, 200-500 fps): 7 classes; pass the train/testA/testB sheets to use all.

    Args:
        annotations: the sheet(s); default the training sheet, or all three under `official_split`.
        official_split: MEGC 2024's split instead of subject folds: one fold that trains on the
            `training` sheet's subjects and tests on testA and testB (each test sample keeps its set;
            the runner reports metrics per test set and on both). A sheet belongs to the set its file
            name starts with (training, testA, testB). `val_subjects` draws an inner validation split
            from the training subjects.
    """

    def __init__(self, root: str, annotations: str | list[str] | None = None, protocol: str = "7class",
                 release: str | None = "original", official_split: bool = False, **kwargs: Any) -> None:
        if annotations is None:
            annotations = list(DFME_OFFICIAL_SHEETS.values()) if official_split else DFME_OFFICIAL_SHEETS[TRAINING_SET]
        super().__init__("dfme", root, protocol, annotations, release, **kwargs)
        self.official_split = official_split
        self.sheet_sets = official_sheet_sets(self.sheets) if official_split else {}

    def official_sets(self) -> np.ndarray | None:
        """Under `official_split`, each table row's set, from the sheet that lists its sample."""
        if not self.official_split:
            return None
        set_of = dict(zip(self.samples["sample_id"].astype(str), self.samples["sheet"].map(self.sheet_sets)))
        return self.table["sample_id"].astype(str).map(set_of).to_numpy(dtype=object)


def official_sheet_sets(sheets: list[Path]) -> dict[str, str]:
    """Sheet file name -> its DFME set (the set its name starts with); one error when a sheet matches no
    set or a set has no sheet."""
    sets = {}
    for sheet in sheets:
        matches = [name for name in DFME_OFFICIAL_SHEETS if sheet.name.lower().startswith(name.lower())]
        if not matches:
            raise MERError(f"official_split: cannot tell which DFME set {sheet} lists; its file name must start with "
                           f"{', '.join(DFME_OFFICIAL_SHEETS)} (as MEGC 2024's {', '.join(DFME_OFFICIAL_SHEETS.values())})")
        sets[sheet.name] = matches[0]
    missing = [name for name in DFME_OFFICIAL_SHEETS if name not in sets.values()]
    if missing:
        raise MERError(f"official_split needs DFME's sheets of every set; none given for {', '.join(missing)} "
                       f"(e.g. {', '.join(DFME_OFFICIAL_SHEETS[name] for name in missing)}); leave annotations unset to use all three")
    return sets


class MMEWDataModule(ReleaseDataModule):
    """MMEW: 300 micro-expressions of 36 subjects at 90 fps. Protocols '6class' (without 'others': our
    reading of Xie et al.'s unnamed six classes) and '7class'."""

    def __init__(self, root: str, annotations: str | list[str] = "MMEW_Micro_Exp.xlsx", protocol: str = "6class",
                 release: str | None = "original", **kwargs: Any) -> None:
        super().__init__("mmew", root, protocol, annotations, release, **kwargs)


DATAMODULES: dict[str, type[ReleaseDataModule]] = {
    "casme2": CASME2DataModule,
    "samm": SAMMDataModule,
    "smic": SMICDataModule,
    "casme3": CASME3DataModule,
    "dfme": DFMEDataModule,
    "mmew": MMEWDataModule,
}
