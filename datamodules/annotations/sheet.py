"""Annotation sheets (xlsx or csv) read by column NAME: header detection, column lookup, cell text.

Releases differ in layout: SAMM puts a banner of notes above the header, CAS(ME)³ keeps its labels
in a workbook whose first sheet is 'label', copies circulate as csv. So the header is the first row
holding a subject column, the first sheet that has one is used, and columns are matched by name
(case, spaces, '_' and '-' ignored) against a few aliases per field. Row numbers are kept as a
spreadsheet app shows them (1-based, banner and header included).
"""

from __future__ import annotations

import csv
import math
import re
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from datamodules.errors import MERError

FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "subject": ("subject", "sub", "participant"),
    "clip": ("filename", "clip", "video", "filenameo", "material"),
    "onset": ("onsetframe", "onset", "onsetf"),
    "apex": ("apexframe", "apex", "apexf"),
    "offset": ("offsetframe", "offset", "offsetf"),
    "aus": ("actionunits", "actionunit", "aus", "au"),
    "emotion": ("estimatedemotion", "emotion", "label"),
}
"""Standard fields -> accepted column names (normalised), the first one present wins."""


def normalise_name(name: object) -> str:
    """Column name as compared: lower case without spaces, '_' or '-' ('Onset Frame' -> 'onsetframe')."""
    return re.sub(r"[\s_\-]+", "", cell_text(name)).lower()


def cell_text(value: object) -> str:
    """A cell as text: '' when empty, Excel numbers without a spurious '.0' (12.0 -> '12')."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass
class Sheet:
    """The rows below the header of one annotation sheet, cells as read (object)."""

    path: Path
    header: list[str]
    cells: pd.DataFrame
    """Columns are positions in `header`; the index is the spreadsheet row number (1-based)."""

    def column_positions(self, wanted: Mapping[str, tuple[str, ...]], required: set[str]) -> dict[str, int]:
        """Field -> column position for each wanted field present; a missing required field is an error."""
        by_name: dict[str, int] = {}
        for position, name in enumerate(self.header):
            by_name.setdefault(normalise_name(name), position)
        positions = {}
        for field, aliases in wanted.items():
            found = next((by_name[alias] for alias in aliases if alias in by_name), None)
            if found is not None:
                positions[field] = found
            elif field in required:
                raise MERError(
                    f"{self.path}: no {field!r} column (looked for {', '.join(aliases)}); "
                    f"columns found: {[name for name in self.header if name]}")
        return positions

    def rows(self, positions: Mapping[str, int]) -> Iterator[tuple[int, dict[str, object]]]:
        """(row number, field -> cell) for every row with something in a wanted column."""
        for row_number, row in zip(self.cells.index, self.cells.to_numpy()):
            values = {field: row[position] for field, position in positions.items()}
            if any(cell_text(value) for value in values.values()):
                yield int(row_number), values


def read_sheet(path: Path, header_names: tuple[str, ...]) -> Sheet:
    """The first table in `path` whose header row has a cell named like one of `header_names`."""
    for raw in _raw_tables(path):
        names = raw.map(normalise_name)
        hits = names.isin(header_names).any(axis=1)
        if hits.any():
            header_row = int(hits.idxmax())
            body = raw.iloc[header_row + 1:].copy()
            body.index = body.index + 1
            return Sheet(path, [cell_text(name) for name in raw.iloc[header_row]], body)
    raise MERError(f"{path}: no header row with a {header_names[0]!r} column in any sheet")


def _raw_tables(path: Path) -> list[pd.DataFrame]:
    """Every sheet of a workbook (or the one table of a csv), no header, rows from 0 = spreadsheet row 1."""
    if path.suffix.lower() == ".csv":
        return [_read_csv(path)]
    try:
        sheets = pd.read_excel(path, sheet_name=None, header=None, dtype=object)
    except ImportError as err:  # an old .xls needs an engine that is not installed
        raise MERError(f"{path}: this workbook format needs a package that is not installed ({err}); "
                       "save it as .xlsx or .csv") from err
    except OSError as err:
        raise MERError(f"{path}: cannot be read ({err.strerror or err})") from err
    except (ValueError, KeyError, zipfile.BadZipFile) as err:
        # a renamed text file: ValueError (format unknown); a zip without a workbook inside: KeyError
        raise MERError(f"{path}: not an Excel workbook (renamed or damaged?); open it in a spreadsheet app and "
                       "save it as .xlsx, or export it as .csv") from err
    return [sheet.reset_index(drop=True) for sheet in sheets.values()]


def _read_csv(path: Path) -> pd.DataFrame:
    """A csv as a grid of text cells, one grid row per record (blank lines kept, so row numbers hold)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    records = list(csv.reader(text.splitlines()))
    width = max((len(record) for record in records), default=0)
    return pd.DataFrame([record + [""] * (width - len(record)) for record in records], dtype=object)
