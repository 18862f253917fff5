"""A whole ``mer loso`` run: plan it (every check before anything is written), run its selected folds as
jobs with the executor the options ask for (this machine, or a SLURM array), then pool them; with
``--seeds``, the same for every seed, then their summary."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from datamodules.errors import MERError

from ..output_folder import check_output_folder
from .executors.local import run_local
from .executors.slurm import launch, launch_seeds_summary
from .options import LosoOptions
from .planning import plan_run, resolve_fold_batch
from .pooling import aggregate, finish_command, missing_folds
from .run_plan import RunPlan, is_rank_zero
from .seed_runs import check_output, pool, resume_command, seed_config, seed_dir, summarise_pooled


def run_loso(config_yaml: str, options: LosoOptions) -> dict[str, Any] | None:
    """Plan (or resume) the run of the resolved LightningCLI config `config_yaml` into ``--output``,
    run its selected folds here (or submit them to SLURM), and pool them once all folds are done
    (returns the pooled metrics). With ``--seeds`` the same for every seed into OUTPUT/seed_N,
    then the mean ± std over the seeds (returns that summary)."""
    scope = options.scope
    if scope.aggregate_only is not None:
        return pool(Path(scope.aggregate_only))
    if scope.output is None:
        raise MERError("mer loso needs an output directory (--output DIR)")
    os.environ.setdefault("WANDB_SILENT", "true")
    run_dir = Path(scope.output)
    check_output_folder(run_dir)
    check_output(run_dir, seeds=scope.seeds is not None)
    if scope.seeds is not None:
        run_dirs = [seed_dir(run_dir, seed) for seed in scope.seed_list()]
        return run_seeds(config_yaml, resolve_fold_batch(config_yaml, options, run_dirs), run_dir)
    options = resolve_fold_batch(config_yaml, options, [run_dir])
    return execute(run_dir, plan_run(config_yaml, options, run_dir), options)


def execute(run_dir: Path, plan: RunPlan, options: LosoOptions, resume: str | None = None) -> dict[str, Any] | None:
    """Run the planned run's selected folds with the executor the options ask for, then pool it (None: submitted
    to SLURM, or folds still missing). `resume`: the command to print on Ctrl-C (default: this run's)."""
    if options.slurm.on_slurm:
        launch(run_dir, plan.folds, options)
        return None
    try:
        run_local(run_dir, plan, plan.folds, options.local, options.batching.size)
    except KeyboardInterrupt:
        missing = missing_folds(run_dir, plan)
        print(f"\ninterrupted: {plan.n_folds - len(missing)} of {plan.n_folds} folds finished; a fold in training "
              f"resumes from its last finished epoch. Finish with: "
              f"{resume or finish_command(run_dir, plan, missing, options.executor_arguments())}", file=sys.stderr)
        raise SystemExit(130) from None
    if not is_rank_zero():  # the other ranks of a multi-device fold: rank 0 reports and pools
        return None
    return aggregate(run_dir)  # or names the folds still missing


def run_seeds(config_yaml: str, options: LosoOptions, output: Path) -> dict[str, Any] | None:
    """Every seed's run planned first (all checks before any training), then run one seed after another
    (each spread over the executor's workers/devices, or submitted to SLURM), then summarised."""
    seeds = options.scope.seed_list()
    plans = {seed: plan_run(seed_config(config_yaml, seed), options, seed_dir(output, seed)) for seed in seeds}
    resume = resume_command(output, options)
    if options.slurm.on_slurm:
        jobs = [launch(seed_dir(output, seed), plan.folds, options) for seed, plan in plans.items()]
        launch_seeds_summary(output, [ids[1] for ids in jobs if ids], options.slurm)
        return None
    pooled = {seed: execute(seed_dir(output, seed), plan, options, resume) for seed, plan in plans.items()}
    if not is_rank_zero():
        return None
    return summarise_pooled(output, pooled)
