"""Load a database's annotation sheet(s) under a protocol: samples, AU vocabulary, sheet issues.

Every row of the sheet ends up in exactly one place: a sample, `excluded` (its emotion is not in the
protocol, or the protocol's official list leaves the clip out), or an 'unusable' issue. Warnings are
reported for every row of the sheet, whatever the protocol: they describe the sheet. A repeated
sample id is kept, renamed '<id>_2', '<id>_3'..., with a warning.
"""

from __future__ import annotations

import re

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.errors import MERError

from .action_units import au_vocabulary, multi_hot
from .database import Database
from .databases import DATABASES
from .rows import Record, RowIssue, read_row
from .sheet import FIELD_ALIASES, cell_text, read_sheet

COLUMNS = ("sample_id", "dataset", "subject", "subject_number", "clip", "onset", "apex", "offset", "emotion", "emotion_raw",
           "label", "label_name", "aus", "sheet", "sheet_row")


@dataclass
class Annotations:
    """The usable samples of a database under one protocol, and what the sheet(s) said besides."""

    dataset: str
    protocol: str
    class_names: tuple[str, ...]
    au_vocabulary: tuple[str, ...]
    samples: pd.DataFrame
    issues: list[RowIssue]
    excluded: dict[str, int]

    def au_matrix(self) -> np.ndarray:
        """(n_samples, len(au_vocabulary)) uint8 multi-hot AU targets, rows in `samples` order."""
        return multi_hot(self.samples["aus"], self.au_vocabulary)

    def summary(self) -> dict:
        """Counts and sheet issues as plain data (what `mer dataset-info --json` prints)."""
        counts = self.samples["label_name"].value_counts()
        return {
            "n_samples": len(self.samples),
            "n_subjects": int(self.samples["subject"].nunique()),
            "class_counts": {name: int(counts.get(name, 0)) for name in self.class_names},
            "warnings": [str(issue) for issue in self.issues if issue.kind == "warning"],
            "unusable": [str(issue) for issue in self.issues if issue.kind == "unusable"],
            "excluded": dict(self.excluded),
        }


def load_annotations(dataset: str, sheets: str | Path | Sequence[str | Path], protocol: str,
                     fold_side: bool = True, fold_intensity: bool = True) -> Annotations:
    """Read `sheets` (several for DFME's training/testA/testB) of `dataset` and apply `protocol`.

    Args:
        dataset: one of DATASETS.
        sheets: annotation file(s), xlsx or csv, as the release ships them.
        protocol: a key of PROTOCOLS[dataset].
        fold_side: read 'L12'/'R12' as AU12.
        fold_intensity: read '12A' as AU12.
    """
    database = _database(dataset)
    if protocol not in database.protocols:
        raise MERError(f"unknown protocol {protocol!r} for {dataset}; choose one of {', '.join(database.protocols)}")
    rules = database.protocols[protocol]
    records, issues = _read_records(database, _sheet_paths(sheets), fold_side, fold_intensity)
    kept, excluded = [], Counter()
    for record in records:
        emotion = record.fields["emotion"]
        if emotion not in rules.mapping:
            excluded[emotion] += 1
        elif record.fields["sample_id"] in rules.left_out:
            excluded[f"{emotion} (not in the protocol's official list)"] += 1
        else:
            label_name = rules.mapping[emotion]
            record.fields |= {"label": rules.class_names.index(label_name), "label_name": label_name}
            kept.append(record)
    return Annotations(
        dataset=dataset,
        protocol=protocol,
        class_names=rules.class_names,
        au_vocabulary=au_vocabulary(unit for record in kept for unit in record.units),
        samples=_samples_frame(dataset, database, kept),
        issues=issues,
        excluded=dict(excluded.most_common()),
    )


def _database(dataset: str) -> Database:
    if dataset not in DATABASES:
        raise MERError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATABASES)}")
    return DATABASES[dataset]


def _sheet_paths(sheets: str | Path | Sequence[str | Path]) -> list[Path]:
    paths = [Path(sheets)] if isinstance(sheets, (str, Path)) else [Path(sheet) for sheet in sheets]
    if not paths:
        raise MERError("no annotation sheet given")
    for path in paths:
        if not path.is_file():
            raise MERError(f"annotation sheet not found: {path}")
    return paths


def _read_records(database: Database, paths: list[Path], fold_side: bool,
                  fold_intensity: bool) -> tuple[list[Record], list[RowIssue]]:
    """Usable records of every sheet (ids made unique) and all row issues, in sheet order."""
    # SMIC-E's own annotation has no apex column: every apex is then unknown (a warning per row)
    required = {field: aliases for field, aliases in FIELD_ALIASES.items() if field != "aus" or database.has_aus}
    wanted = required | dict(database.extra_columns)
    records: list[Record] = []
    issues: list[RowIssue] = []
    first_seen: dict[str, tuple[str, int]] = {}
    for path in paths:
        sheet = read_sheet(path, FIELD_ALIASES["subject"])
        positions = sheet.column_positions(wanted, set(required) - {"apex"})
        rows = list(sheet.rows(positions))
        _check_clip_names(database, path, [cell_text(cells["clip"]) for _, cells in rows])
        for row, cells in rows:
            result = read_row(database, cells, path.name, row, fold_side, fold_intensity)
            if isinstance(result, RowIssue):
                issues.append(result)
                continue
            issues += result.issues
            sample_id = result.fields["sample_id"]
            if sample_id in first_seen:
                unique_id = _next_free(sample_id, first_seen)
                first_sheet, first_row = first_seen[sample_id]
                sample = f"{result.fields['subject']}/{result.fields['clip']}"
                issues.append(RowIssue(path.name, row, sample, "warning", f"sample id {sample_id!r} repeats "
                                       f"{first_sheet} row {first_row}; renamed {unique_id!r}"))
                result.fields["sample_id"] = sample_id = unique_id
            first_seen[sample_id] = (path.name, row)
            records.append(result)
    return records, issues


def _check_clip_names(database: Database, path: Path, names: list[str]) -> None:
    """A sheet none of whose clip names (every row's, usable or not) looks like the database's is
    another database's sheet: one error, not a sheet of unusable rows."""
    names = [name.lower() if database.lowercase_clip else name for name in names if name]
    if names and not any(re.fullmatch(database.clip_names, name) for name in names):
        raise MERError(f"{path}: no clip name looks like a {database.title} clip (e.g. {database.clip_example!r}; "
                       f"found {names[0]!r}, ...): is this the sheet of another database?")


def _next_free(sample_id: str, taken: dict[str, tuple[str, int]]) -> str:
    number = 2
    while f"{sample_id}_{number}" in taken:
        number += 1
    return f"{sample_id}_{number}"


def _samples_frame(dataset: str, database: Database, records: list[Record]) -> pd.DataFrame:
    """One row per kept record, standard columns first; frames as nullable integers."""
    extra = [column for column in database.extra_columns if any(column in r.fields for r in records)]
    frame = pd.DataFrame([record.fields | {"dataset": dataset} for record in records],
                         columns=[*COLUMNS, *extra])
    return frame.astype({"onset": "Int64", "apex": "Int64", "offset": "Int64", "label": "int64", "sheet_row": "int64"})
