"""One thin DataModule per database: its name, default sheet, protocol and release layout.

Every other argument is ReleaseDataModule's (crop size, frames, TV-L1, cache, folds, ...).
A relative `annotations` path is looked up as given, then in `root` and its parent folder.
"""

from __future__ import annotations

from typing import Any

from .datamodule import ReleaseDataModule


class CASME2DataModule(ReleaseDataModule):
    """CASME II: 26 subjects, 255 coded clips at 200 fps. Protocols '5class' (Xie et al.) and 'cde'."""

    def __init__(self, root: str, annotations: str | list[str] = "CASME2-coding-20140508.xlsx", protocol: str = "5class",
                 release: str | None = "cropped", **kwargs: Any) -> None:
        super().__init__("casme2", root, protocol, annotations, release, **kwargs)


class SAMMDataModule(ReleaseDataModule):
    """SAMM: 159 micro-expressions of 29 subjects at 200 fps. Protocols '5class' (Xie et al.) and 'cde'."""

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


class DFMEDataModule(ReleaseDataModule):
    """DFME (CCAC 2024 public subset, 200-500 fps): 7 classes; pass the train/testA/testB sheets to use all."""

    def __init__(self, root: str, annotations: str | list[str] = "training_full_with_AU.xlsx", protocol: str = "7class",
                 release: str | None = "original", **kwargs: Any) -> None:
        super().__init__("dfme", root, protocol, annotations, release, **kwargs)


class MMEWDataModule(ReleaseDataModule):
    """MMEW: 300 micro-expressions of 36 subjects at 90 fps. Protocols '6class' and '7class' (Xie et al.)."""

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
