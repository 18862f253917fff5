"""``mer loso``: every fold of a config, then UF1/UAR/accuracy once on the pooled predictions.

Each fold gets a fresh model and Trainer built from the same resolved config, seeded with
``seed_everything + fold``, trained for the configured epochs (or early-stopped on an inner
validation split of training subjects) and its LAST weights predict the held-out subject(s).
Nothing is selected on the held-out subjects. The run is planned first (every check before
anything is written), then its folds are run as jobs by an executor (``experiments.runner``),
then pooled.

Output directory::

    config.yaml  run.json          resolved config, its hash and the fold plan (a rerun must match it)
    folds/fold_007.csv             predictions of a finished fold (a rerun skips it)
    folds/fold_007/                its CSV logs (logs/version_*/), last.ckpt (resume point)
    wandb/                         offline W&B runs (one per fold + one 'pooled'), `wandb sync`
    predictions.csv  metrics.json  confusion_matrix.png
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datamodules.errors import MERError

from .runner.aggregate import aggregate, finish_command, missing_folds
from .runner.local import run_local
from .runner.options import LosoOptions
from .runner.plan import is_rank_zero, plan_run


def run_loso(config_yaml: str, options: LosoOptions) -> dict[str, Any] | None:
    """Plan (or resume) the run of the resolved LightningCLI config `config_yaml` into ``options.output``,
    run its selected folds here (or submit them to SLURM), and pool them once all folds are done
    (returns the pooled metrics)."""
    if options.aggregate_only is not None:
        return aggregate(options.aggregate_only)
    if options.output is None:
        raise MERError("mer loso needs an output directory (--output DIR)")
    os.environ.setdefault("WANDB_SILENT", "true")
    run_dir = Path(options.output)
    plan = plan_run(config_yaml, options, run_dir)
    if options.launcher == "slurm":
        from .runner.slurm import launch

        launch(run_dir, plan.folds, options)
        return None
    try:
        run_local(run_dir, plan, plan.folds, options.devices, options.folds_per_device, options.workers)
    except KeyboardInterrupt:
        missing = missing_folds(run_dir, plan)
        print(f"\ninterrupted: {plan.n_folds - len(missing)} of {plan.n_folds} folds finished; a fold in training "
              f"resumes from its last finished epoch. Finish with: {finish_command(run_dir, plan, missing)}")
        raise SystemExit(130) from None
    if not is_rank_zero():  # the other ranks of a multi-device fold: rank 0 reports and pools
        return None
    return aggregate(run_dir)  # or names the folds still missing


def default_output(config_path: str) -> Path:
    path = Path(config_path)
    return Path("outputs") / f"{path.parent.name}-{path.stem}"
