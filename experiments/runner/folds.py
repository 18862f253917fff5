"""Fold selections (``--folds 0-9,12``), lists of numbers (``--seeds``) and where a fold's files live in a run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datamodules.errors import MERError


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


class TrainerRoot:
    """A Trainer's root directory ``dir`` (of a fold or of a fold group; subclasses say where) and its
    resume checkpoint."""

    @property
    def dir(self) -> Path:
        raise NotImplementedError

    @property
    def last_ckpt(self) -> Path:
        return self.dir / "last.ckpt"


@dataclass(frozen=True)
class FoldPaths(TrainerRoot):
    """Files of fold `k` in run directory `run_dir`.

    ``csv``: its predictions (written last, atomically: their existence means the fold is done);
    ``dir``: Trainer root of the fold (CSV logs, ``last.ckpt``, Lightning's SLURM ``hpc_ckpt_*``).
    """

    run_dir: Path
    k: int

    @property
    def csv(self) -> Path:
        return self.run_dir / "folds" / f"fold_{self.k:03d}.csv"

    @property
    def dir(self) -> Path:
        return self.run_dir / "folds" / f"fold_{self.k:03d}"

    @property
    def record(self) -> Path:
        """Which weights predicted the fold and why (``fold_record``), written just before the CSV."""
        return self.run_dir / "folds" / f"fold_{self.k:03d}.json"

    @property
    def error_log(self) -> Path:
        return self.dir / "error.log"

    def done(self) -> bool:
        return self.csv.is_file()
