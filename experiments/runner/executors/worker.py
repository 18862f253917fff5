"""Worker command: run a chunk of a planned run's folds, e.g. one SLURM array task.

    python -m experiments.runner.executors.worker RUN_DIR [--folds SPEC | --task-index I --folds-per-task K]
        [--devices 0,1 | --step-gpus] [--folds-per-device K] [--workers N] [--fold-batch off|auto|N]
        [--max-requeues N] [--aggregate]

RUN_DIR must have been planned by ``mer loso`` (config.yaml + run.json). Without a selection the
run's selected folds are run; ``--task-index I --folds-per-task K`` takes the I-th chunk of K of
them. Under SLURM (``SLURM_JOB_ID`` set) every fold's Trainer uses Lightning's SLURM environment
with auto-requeue on SIGUSR1 (and before and between Trainers, ``executors.requeue``); ``--step-gpus``
reads the GPUs inside the job step; with ``--max-requeues N`` a task SLURM requeued more than N times
fails at its start with one line naming its unfinished folds. ``--aggregate`` pools the run afterwards when every fold is done;
``--aggregate`` alone (no selection) only pools, or names the missing folds: the aggregation job
(given the OUTPUT folder of ``--seeds``, it pools every seed and writes their summary).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from datamodules.errors import MERError

from ...exit_codes import guarded
from .requeue import requeue_on_usr1, restarts

if TYPE_CHECKING:  # imported where needed: the worker answers SLURM's requeue signal before importing Lightning
    from ..run_plan import RunPlan

STEP_GPUS = "CUDA_VISIBLE_DEVICES"  # what SLURM sets inside a job step to the GPUs that step was given


def task_folds(plan: RunPlan, task_index: int, folds_per_task: int) -> list[int]:
    """The folds of array task `task_index`: its chunk of the run's selected folds."""
    chunk = plan.folds[task_index * folds_per_task:(task_index + 1) * folds_per_task]
    if task_index < 0 or folds_per_task < 1 or not chunk:
        raise MERError(f"task {task_index} with {folds_per_task} folds per task has no folds: the run has "
                       f"{len(plan.folds)} selected folds")
    return chunk


def step_gpus() -> str:
    """The GPUs SLURM gave this job step, read inside the step (the batch script's own list can differ)."""
    devices = os.environ.get(STEP_GPUS, "").strip()
    if not devices:
        raise MERError(f"the task asked for GPUs (--gpus-per-task) but its job step sees none (${STEP_GPUS} is "
                       "empty): check that the partition has GPUs (gres) and that srun passes them to the step")
    return devices


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.runner.executors.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory planned by mer loso")
    chunk = parser.add_mutually_exclusive_group()
    chunk.add_argument("--folds", help="fold indices, e.g. 0-9 or 3,5 (default: the run's selected folds)")
    chunk.add_argument("--task-index", type=int, help="array task index: runs its chunk of the selected folds")
    parser.add_argument("--folds-per-task", type=int, default=1, help="folds per array task (with --task-index)")
    gpus = parser.add_mutually_exclusive_group()
    gpus.add_argument("--devices", help="GPU indices to spread the folds over, e.g. 0,1")
    gpus.add_argument("--step-gpus", action="store_true",
                      help=f"spread the folds over the GPUs of this SLURM job step (${STEP_GPUS} inside the step)")
    parser.add_argument("--folds-per-device", type=int, default=1, help="folds at once on each GPU")
    parser.add_argument("--workers", type=int, default=1, help="folds at once on CPU")
    parser.add_argument("--fold-batch", default="off", help="train folds at once: off, auto or N folds per job")
    parser.add_argument("--max-requeues", type=int, help="fail instead of running when SLURM requeued the task more often")
    parser.add_argument("--aggregate", action="store_true", help="pool the run when every fold is done")
    return parser.parse_args(argv)


def worker_main(argv: list[str] | None = None) -> None:
    requeue_on_usr1()  # first, before the heavy imports below (executors.requeue)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from ..fold_selection import format_folds, parse_folds
    from ..options import FoldBatching, LocalExecutor
    from ..paths import FoldPaths
    from ..pooling import aggregate, missing_folds
    from ..run_plan import RunPlan
    from ..seed_runs import pool
    from .local import run_local

    if args.aggregate and args.folds is None and args.task_index is None:
        if pool(args.run_dir) is None:  # a run, or a --seeds output folder: its seeds and their summary
            sys.exit(1)  # the aggregation job shows FAILED when folds are missing (it names them)
        return
    plan = RunPlan.load(args.run_dir)
    if args.task_index is not None:
        folds = task_folds(plan, args.task_index, args.folds_per_task)
    else:
        folds = parse_folds(args.folds, plan.n_folds) if args.folds else plan.folds
    devices = step_gpus() if args.step_gpus else args.devices
    print(f"worker: folds {format_folds(folds)} of {args.run_dir}, GPUs {devices or 'none'}, "
          f"requeued {restarts()} time(s)", flush=True)
    unfinished = [k for k in folds if not FoldPaths(args.run_dir, k).done()]
    if args.max_requeues is not None and restarts() > args.max_requeues and unfinished:
        raise MERError(f"{', '.join(map(plan.fold_name, unfinished))} of {args.run_dir} not finished after "
                       f"{restarts()} requeues (--max-requeues {args.max_requeues}; a requeued fold resumes from its "
                       "last finished epoch, so an epoch longer than the time limit never ends): give a longer --time, "
                       "fewer --folds-per-task or a larger --max-requeues and launch the run again (mer loso --config "
                       f"{args.run_dir / 'config.yaml'} --output {args.run_dir} --launcher slurm ...; its finished folds "
                       "are kept)")
    executor = LocalExecutor(devices=devices, folds_per_device=args.folds_per_device, workers=args.workers)
    executor.check()
    run_local(args.run_dir, plan, folds, executor, FoldBatching(args.fold_batch).size)
    if args.aggregate and not missing_folds(args.run_dir, plan):
        aggregate(args.run_dir)


if __name__ == "__main__":
    guarded(worker_main)
