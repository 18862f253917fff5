"""Where a fold's and a fold group's files live in a run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .fold_selection import format_folds


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


@dataclass(frozen=True)
class GroupPaths(TrainerRoot):
    """Files of the fold group `folds` in `run_dir` (``--fold-batch``)."""

    run_dir: Path
    folds: tuple[int, ...]

    @property
    def dir(self) -> Path:
        return self.run_dir / "folds" / f"group_{format_folds(list(self.folds))}"

    @property
    def record(self) -> Path:
        """The group's folds (``group.json``), written before training."""
        return self.dir / "group.json"
