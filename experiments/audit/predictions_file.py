"""`mer audit --predictions FILE.csv`: pooled UF1/UAR of any predictions file beside the mean of its
per-subject (and per-fold) scores, so that the effect of a paper's averaging is one subtraction.

Labels and predictions are compared as text, so integer classes and class names both work; the
columns are named by the user when they are not ours (subject, label, pred, fold).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from datamodules.errors import MERError

from .scores import Averaging, averaging


@dataclass(frozen=True)
class Columns:
    subject: str = "subject"
    label: str = "label"
    pred: str = "pred"
    fold: str | None = None  # None: 'fold' when the file has it


def read_foreign(path: Path, columns: Columns) -> tuple[pd.DataFrame, list[str]]:
    """The file's subject/label/pred (and fold) columns as text, and the columns to average over."""
    if not path.is_file():
        raise MERError(f"{path} is not a file: give a predictions CSV with subject, label and prediction columns")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise MERError(f"{path} is not a readable CSV ({err})") from None
    fold = columns.fold or ("fold" if "fold" in table.columns else None)
    wanted = {"--subject-col": columns.subject, "--label-col": columns.label, "--pred-col": columns.pred}
    if fold is not None:
        wanted["--fold-col"] = fold
    missing = [f"{column!r} ({option})" for option, column in wanted.items() if column not in table.columns]
    if missing:
        raise MERError(f"{path} has no column {', '.join(missing)}; its columns are {', '.join(table.columns)}; "
                       "name yours with --subject-col/--label-col/--pred-col/--fold-col")
    if table.empty:
        raise MERError(f"{path} has no rows")
    table = table[list(wanted.values())].apply(lambda column: column.str.strip())
    empty = table.eq("").to_numpy()
    if empty.any():
        row, col = divmod(int(empty.argmax()), table.shape[1])
        raise MERError(f"{path}: row {row + 2} has an empty {table.columns[col]!r}; fill or remove it")
    return table, [columns.subject] + ([fold] if fold is not None else [])


def audit_predictions(path: Path, columns: Columns) -> tuple[Averaging, dict[str, Any]]:
    """Pooled vs averaged scores of the file, and the audit.json contents."""
    table, groups = read_foreign(path, columns)
    result = averaging(table, columns.label, columns.pred, groups)
    return result, {"target": str(path), "columns": {"subject": columns.subject, "label": columns.label,
                                                     "pred": columns.pred, "fold": groups[1] if len(groups) > 1 else None},
                    "averaging": result.to_dict()}
