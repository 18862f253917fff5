"""Fold jobs, what every executor runs: :class:`FoldJob` (one fold, one Trainer) and, under
``--fold-batch``, :class:`FoldGroupJob` (folds trained at once); :func:`pending_jobs` cuts a run's
folds into them."""

from __future__ import annotations

from pathlib import Path

from ..paths import FoldPaths
from .fold_group_job import FoldGroupJob, job_chunks, started_groups
from .fold_job import FoldJob
from .job import Job, Report

__all__ = ["FoldGroupJob", "FoldJob", "Job", "Report", "pending_jobs"]


def pending_jobs(run_dir: Path, folds: list[int], fold_batch: int | None, slots: int) -> list[Job]:
    """The jobs of the not-yet-done `folds`: one fold each, or under fold batching (``fold_batch`` N, or 0 =
    auto) the groups an earlier attempt started (each its own job, so it resumes from its checkpoint), then
    the rest in jobs for `slots` parallel workers."""
    todo = [k for k in folds if not FoldPaths(run_dir, k).done()]
    if fold_batch is None:
        return [FoldJob(run_dir, k) for k in todo]
    started = started_groups(run_dir, todo)
    taken = {k for group in started for k in group}
    chunks = started + job_chunks([k for k in todo if k not in taken], fold_batch, slots)
    return [FoldGroupJob(run_dir, tuple(chunk), fold_batch) for chunk in chunks]
