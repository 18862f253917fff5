"""Annotation adapters for CASME II, SAMM, SMIC-HS, CAS(ME)³, DFME and MMEW.

    from datamodules.annotations import load_annotations
    annotations = load_annotations("casme2", "CASME2-coding-20140508.xlsx", "cde")
    annotations.samples          # one row per usable sample (sample_id, subject, clip, frames, label, aus...)
    annotations.summary()        # counts, warnings, unusable rows, excluded emotions

One shared parser (sheet.py, rows.py, action_units.py); each database is a declaration in
databases.py; protocols (class names and emotion mappings) are part of those declarations.
"""

from .annotations import Annotations, load_annotations
from .databases import DATABASES as _DATABASES
from .rows import RowIssue

DATASETS: tuple[str, ...] = tuple(_DATABASES)
PROTOCOLS: dict[str, dict[str, tuple[str, ...]]] = {
    name: {protocol: rules.class_names for protocol, rules in database.protocols.items()}
    for name, database in _DATABASES.items()
}

__all__ = ["DATASETS", "PROTOCOLS", "Annotations", "RowIssue", "load_annotations"]
