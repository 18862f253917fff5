"""Fold selections (``--folds 0-9,12``) and lists of numbers (``--seeds``): parsed and written back."""

from __future__ import annotations

from datamodules.errors import MERError

MAX_SEED = 2**32 - 1  # Lightning's seed_everything range


def parse_folds(spec: str | None, n_folds: int) -> list[int]:
    """Sorted fold indices of `spec` ('0-9', '3,5', '0-3,7'); None means every fold.

    An empty spec, an inverted range ('2-1') or an index outside 0..n_folds-1 is a user error.
    """
    if spec is None:
        return list(range(n_folds))
    folds = parse_numbers(spec, "--folds", "fold indices like '0-9' or '3,5'")
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad:
        raise MERError(f"--folds {spec}: fold(s) {bad} out of range, this run has folds 0..{n_folds - 1}")
    return folds


def parse_numbers(spec: str, option: str, example: str) -> list[int]:
    """Sorted distinct non-negative integers of a list of numbers and ranges ('0-3,7'); `option` and
    `example` ("fold indices like '0-9'") name what was expected in the one-line error."""
    numbers: set[int] = set()
    for part in spec.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise MERError(f"{option} '{spec}' is not a list of {example}") from None
        if last < first:
            raise MERError(f"{option} '{spec}': range {part.strip()} is empty (write it as {last}-{first})")
        numbers.update(range(first, last + 1))
    return sorted(numbers)


def format_folds(folds: list[int]) -> str:
    """The shortest ``--folds`` spec of `folds`, e.g. [0, 1, 2, 5] -> '0-2,5'."""
    parts: list[str] = []
    for k in sorted(folds):
        if parts and k == int(parts[-1].rpartition("-")[2]) + 1:
            parts[-1] = f"{parts[-1].partition('-')[0]}-{k}"
        else:
            parts.append(str(k))
    return ",".join(parts)
