"""Jobs as the executors see them: plain data (picklable for worker processes), one per undone fold or
fold group, and the job of a retry holds only the folds still to do."""

from __future__ import annotations

import pickle
from pathlib import Path

from experiments.runner.jobs import FoldGroupJob, FoldJob, pending_jobs
from experiments.runner.options import LosoOptions
from experiments.runner.paths import FoldPaths


def finish(run_dir: Path, *folds: int) -> None:
    for k in folds:
        FoldPaths(run_dir, k).csv.parent.mkdir(parents=True, exist_ok=True)
        FoldPaths(run_dir, k).csv.write_text("done")


def test_one_fold_job_per_undone_fold(tmp_path: Path) -> None:
    finish(tmp_path, 1)
    jobs = pending_jobs(tmp_path, [0, 1, 2], fold_batch=None, slots=4)
    assert jobs == [FoldJob(tmp_path, 0), FoldJob(tmp_path, 2)]
    assert [job.name for job in jobs] == ["fold 0", "fold 2"] and jobs[1].folds == (2,)
    assert pickle.loads(pickle.dumps(jobs[0])) == jobs[0]  # a worker process receives it as it is


def test_a_retried_group_job_holds_only_its_undone_folds(tmp_path: Path) -> None:
    (job,) = pending_jobs(tmp_path, [0, 1, 2, 3], fold_batch=4, slots=1)
    assert job == FoldGroupJob(tmp_path, (0, 1, 2, 3), 4) and job.name == "folds 0-3"
    finish(tmp_path, 0, 2)
    assert job.done_folds() == [0, 2]
    assert job.remaining() == FoldGroupJob(tmp_path, (1, 3), 4)
    assert job.error_log == FoldPaths(tmp_path, 0).error_log


def test_command_line_names_reach_their_group() -> None:
    options = LosoOptions.of(workers=3, partition="gpu", fold_batch="auto", wandb="disabled", wandb_project="p", seeds="0-2")
    assert (options.local.workers, options.slurm.partition, options.batching.size) == (3, "gpu", 0)
    assert (options.wandb.mode, options.wandb.project, options.scope.seed_list()) == ("disabled", "p", [0, 1, 2])
    assert options.executor_arguments() == ["--workers", "3", "--fold-batch", "auto"]
    assert options.wandb.arguments() == ["--wandb", "disabled", "--wandb-project", "p"]
