"""``mer loso``: every fold of a config, then UF1/UAR/accuracy once on the pooled predictions.

Each fold gets a fresh model and Trainer built from the same resolved config, seeded with
``seed_everything + fold``, trained for the configured epochs (or early-stopped on an inner
validation split of training subjects); its LAST weights, or the checkpoint a ModelCheckpoint chose
on that inner validation split, predict the held-out samples. Nothing is selected on them. The
folds follow the datamodule's fold plan (LOSO, subject k-fold or an official split). The run is planned first (every check before
anything is written), then its folds are run as jobs by an executor (``experiments.runner``),
then pooled.

Output directory::

    config.yaml  run.json          resolved config, its hash, seed and executor settings (a rerun must match)
    fold_plan.json                 every fold's train/val/test subjects and test samples (a rerun must match)
    folds/fold_007.csv             predictions of a finished fold (a rerun skips it)
    folds/fold_007.json            which weights predicted it and why (last epoch or inner-validation checkpoint)
    folds/fold_007/                its CSV logs (logs/version_*/), last.ckpt (resume point)
    wandb/                         offline W&B runs (one per fold + one 'pooled'), `wandb sync`
    predictions.csv  metrics.json  confusion_matrix.png

With ``--seeds 0,1,2`` each seed N is such a run directory ``OUTPUT/seed_N`` (``seed_everything`` N),
and ``OUTPUT/seeds_summary.json`` / ``.png`` hold mean ± std over the seeds (``runner.seeds``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datamodules.errors import MERError

from .runner.aggregate import aggregate, finish_command, missing_folds
from .runner.local import run_local
from .runner.options import LosoOptions
from .runner.plan import RunPlan, is_rank_zero, plan_run
from .runner.seeds import (check_output, parse_seeds, pool, resume_command, seed_config, seed_dir,
                           summarise_pooled)


def run_loso(config_yaml: str, options: LosoOptions) -> dict[str, Any] | None:
    """Plan (or resume) the run of the resolved LightningCLI config `config_yaml` into ``options.output``,
    run its selected folds here (or submit them to SLURM), and pool them once all folds are done
    (returns the pooled metrics). With ``options.seeds`` the same for every seed into OUTPUT/seed_N,
    then the mean ± std over the seeds (returns that summary)."""
    if options.aggregate_only is not None:
        return pool(Path(options.aggregate_only))
    if options.output is None:
        raise MERError("mer loso needs an output directory (--output DIR)")
    os.environ.setdefault("WANDB_SILENT", "true")
    run_dir = Path(options.output)
    check_output(run_dir, seeds=options.seeds is not None)
    if options.seeds is not None:
        return run_seeds(config_yaml, options, run_dir)
    return execute(run_dir, plan_run(config_yaml, options, run_dir), options)


def execute(run_dir: Path, plan: RunPlan, options: LosoOptions, resume: str | None = None) -> dict[str, Any] | None:
    """Run the planned run's selected folds with the executor the options ask for, then pool it (None: submitted
    to SLURM, or folds still missing). `resume`: the command to print on Ctrl-C (default: this run's)."""
    if options.launcher == "slurm":
        from .runner.slurm import launch

        launch(run_dir, plan.folds, options)
        return None
    try:
        run_local(run_dir, plan, plan.folds, options.devices, options.folds_per_device, options.workers, options.fold_batch)
    except KeyboardInterrupt:
        missing = missing_folds(run_dir, plan)
        print(f"\ninterrupted: {plan.n_folds - len(missing)} of {plan.n_folds} folds finished; a fold in training "
              f"resumes from its last finished epoch. Finish with: {resume or finish_command(run_dir, plan, missing, options.executor_arguments())}")
        raise SystemExit(130) from None
    if not is_rank_zero():  # the other ranks of a multi-device fold: rank 0 reports and pools
        return None
    return aggregate(run_dir)  # or names the folds still missing


def run_seeds(config_yaml: str, options: LosoOptions, output: Path) -> dict[str, Any] | None:
    """Every seed's run planned first (all checks before any training), then run one seed after another
    (each spread over the executor's workers/devices, or submitted to SLURM), then summarised."""
    seeds = parse_seeds(str(options.seeds))
    plans = {seed: plan_run(seed_config(config_yaml, seed), options, seed_dir(output, seed)) for seed in seeds}
    resume = resume_command(output, options)
    if options.launcher == "slurm":
        from .runner.slurm import launch, launch_seeds_summary

        jobs = [launch(seed_dir(output, seed), plan.folds, options) for seed, plan in plans.items()]
        launch_seeds_summary(output, [ids[1] for ids in jobs if ids], options)
        return None
    pooled = {seed: execute(seed_dir(output, seed), plan, options, resume) for seed, plan in plans.items()}
    if not is_rank_zero():
        return None
    return summarise_pooled(output, pooled)


def default_output(config_path: str) -> Path:
    path = Path(config_path)
    return Path("outputs") / f"{path.parent.name}-{path.stem}"


def run_loso_command(args: list[str]) -> None:
    """`mer loso`: parse the fold config and the runner options, then hand both to the runner."""
    from .lightning_cli import LosoCLI, make_cli

    aggregate_only = _value_of("--aggregate-only", args)
    if aggregate_only is not None:  # pools a planned run: its own config.yaml is the config
        run_loso("", LosoOptions(aggregate_only=Path(aggregate_only)))
        return
    cli = make_cli(args, run=False, prog="mer loso", cli_class=LosoCLI)
    options = cli.options()
    if options.output is None and cli.config.get("config"):
        options.output = default_output(str(cli.config.config[0]))
    run_loso(cli.fold_config_yaml(), options)


def _value_of(option: str, args: list[str]) -> str | None:
    """The value of `option` given as `--option VALUE` or `--option=VALUE`, else None."""
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None

