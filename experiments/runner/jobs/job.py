"""What every executor runs: a job, one fold (:class:`~.fold_job.FoldJob`) or folds trained at once
(:class:`~.fold_group_job.FoldGroupJob`), each with one :meth:`Job.run`.

A job is plain data (run directory and folds), so the executors hand it to a worker process or an
array task as it is. ``run`` skips a job whose folds are all done, sets up the process the same way
for every job (the run's threads per fold, deterministic algorithms), then trains and predicts; each
fold's outputs are written by :func:`.fold_outputs.write_fold_outputs`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch

from ..fold_selection import format_folds
from ..paths import FoldPaths
from ..run_plan import RunPlan

Report = Callable[[str], None]  # receives 'fold 3 ep 2/10' for the executor's progress line


class Job(ABC):
    """Folds ``folds`` of the run in ``run_dir`` (subclasses are frozen dataclasses: jobs are compared,
    hashed and sent to worker processes as they are)."""

    run_dir: Path
    folds: tuple[int, ...]

    @property
    def name(self) -> str:
        """'fold 3' or 'folds 0-3' for progress lines."""
        return f"fold{'s' if len(self.folds) > 1 else ''} {format_folds(list(self.folds))}"

    @property
    def error_log(self) -> Path:
        """Where a worker process writes the job's traceback when it fails."""
        return FoldPaths(self.run_dir, self.folds[0]).error_log

    def done_folds(self) -> list[int]:
        return [k for k in self.folds if FoldPaths(self.run_dir, k).done()]

    def remaining(self) -> Job:
        """The job of the folds not done yet (for a retry)."""
        done = self.done_folds()
        return replace(self, folds=tuple(k for k in self.folds if k not in done)) if done else self

    def run(self, plan: RunPlan, report: Report | None = None) -> None:
        """Train and predict the job's folds that are not done (resuming their checkpoints); write each one's outputs."""
        if len(self.done_folds()) == len(self.folds):
            return
        torch.set_num_threads(plan.threads_per_fold)
        torch.use_deterministic_algorithms(True, warn_only=True)
        self.train_and_predict(plan, report)

    @abstractmethod
    def train_and_predict(self, plan: RunPlan, report: Report | None) -> None:
        """The job's training and prediction, in a process set up by :meth:`run`."""


class JobStatus(L.Callback):
    """Reports '<job name> ep e/E' to the executor's progress line."""

    def __init__(self, name: str, report: Report) -> None:
        self.name, self.report = name, report

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.report(f"{self.name} ep {trainer.current_epoch + 1}/{trainer.max_epochs}")
