"""FACS action-unit strings as the releases write them: parsing, folding, vocabulary, multi-hot.

Accepted (case-insensitive; terms joined by '+', spaces around it ignored):
- numbers, also as Excel stored them: 12, 12.0, '12', 'AU12'; 'AD38' and 'M57' (FACS action
  descriptors and movement codes, as in DFME) keep their number;
- a location prefix: L/R (one side), T/B (top/bottom lip), A (asymmetric): 'L12', 'T23', 'A7';
  MMEW's suffix form '12L' means 'L12';
- an intensity suffix A-E: '15A', 'R6A';
- '/' for "or" inside a code: 'A/L12' (A12 or L12), '10A/B' (10A or 10B);
- alternatives: '(R6 or R12)', 'L12 or L14', 'R14A or 17A or 24A', '12/14';
- a qualified code 'ref(7B)' (SAMM): the code is kept, with a warning.

`fold_side` drops the location, `fold_intensity` the intensity. Alternatives that still name
different AUs after folding keep ALL of them, with a warning: the AU target becomes a superset of
what was seen, which costs a possible false positive instead of dropping coded movement. '?' and
unreadable terms are ignored with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .sheet import cell_text

_CODE = re.compile(
    r"(?:AU|AD|M)?(?P<location>[LRTBA](?:/[LRTBA])*)?(?P<number>\d+)(?P<intensity>[A-E](?:/[A-E])*)?(?P<side>[LR])?",
    re.IGNORECASE)
_QUALIFIED = re.compile(r"(?P<qualifier>[A-Za-z]*)\s*\((?P<inner>.*)\)")
_OR = re.compile(r"\s+or\s+", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class ActionUnit:
    """One coded AU; sorts numerically, then by location and intensity."""

    number: int
    location: str = ""
    intensity: str = ""

    def folded(self, fold_side: bool, fold_intensity: bool) -> ActionUnit:
        return ActionUnit(self.number, "" if fold_side else self.location, "" if fold_intensity else self.intensity)

    def __str__(self) -> str:
        return f"{self.location}{self.number}{self.intensity}"


def parse_action_units(cell: object, fold_side: bool = True,
                       fold_intensity: bool = True) -> tuple[tuple[ActionUnit, ...], list[str]]:
    """The sorted distinct AUs of an annotation cell and one warning per oddity met."""
    units: set[ActionUnit] = set()
    warnings: list[str] = []
    for term in _split_terms(cell_text(cell)):
        candidates = {unit.folded(fold_side, fold_intensity) for unit in _read_term(term, warnings)}
        if len(candidates) > 1:
            warnings.append(f"AU alternatives {term!r}: kept all of {format_action_units(candidates)}")
        units |= candidates
    return tuple(sorted(units)), warnings


def format_action_units(units: Iterable[ActionUnit]) -> str:
    """'4+L10' style, numerically sorted; '' when there are none."""
    return "+".join(str(unit) for unit in sorted(units))


def au_vocabulary(units: Iterable[ActionUnit]) -> tuple[str, ...]:
    """Column names ('AU4', 'AUL10', 'AU15A') of the distinct AUs, numerically sorted."""
    return tuple(f"AU{unit}" for unit in sorted(set(units)))


def multi_hot(au_strings: Iterable[str], vocabulary: tuple[str, ...]) -> np.ndarray:
    """(n, len(vocabulary)) uint8 matrix; row i marks the AUs of the i-th formatted string."""
    column = {name: index for index, name in enumerate(vocabulary)}
    strings = list(au_strings)
    matrix = np.zeros((len(strings), len(vocabulary)), np.uint8)
    for row, text in enumerate(strings):
        for token in filter(None, text.split("+")):
            matrix[row, column[f"AU{token}"]] = 1
    return matrix


def _split_terms(text: str) -> list[str]:
    """Split on '+' outside parentheses."""
    terms, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "+" and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    return [term.strip() for term in [*terms, current] if term.strip()]


def _read_term(term: str, warnings: list[str]) -> list[ActionUnit]:
    """Every AU a term may mean (several for alternatives); unreadable parts are warned about."""
    qualified = _QUALIFIED.fullmatch(term)
    if qualified:
        if qualified["qualifier"]:
            warnings.append(f"AU {term!r}: qualifier {qualified['qualifier']!r} not understood; read as {qualified['inner'].strip()!r}")
        term = qualified["inner"].strip()
    options = _OR.split(term)
    if len(options) == 1 and _read_code(term) is None and "/" in term:
        options = term.split("/")
    units = []
    for option in options:
        code = _read_code(option.strip())
        if code is None:
            warnings.append(f"AU {option.strip()!r} is unknown; ignored")
        else:
            units.extend(code)
    return units


def _read_code(token: str) -> list[ActionUnit] | None:
    """One code, its '/' variants expanded ('A/L12' -> A12, L12); None when it is not a code."""
    match = _CODE.fullmatch(token.replace(" ", ""))
    if match is None or (match["location"] and match["side"]):
        return None
    locations = (match["location"] or match["side"] or "").upper().split("/")
    intensities = (match["intensity"] or "").upper().split("/")
    number = int(match["number"])
    return [ActionUnit(number, location, intensity) for location in locations for intensity in intensities]
