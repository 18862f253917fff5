"""Each fold of a fold-batched group logs its training curves to its own W&B run, as on the sequential path.

A sequential fold's ``WandbLogger`` writes ``train/loss`` and ``train/<term>`` (epoch means) into the
fold's run (id ``<group>-fold-<k>``, or the sweep trial's fold id: :func:`..wandb_runs.fold_logger_args`).
A group trains its folds in one Trainer, so one logger cannot hold them: this callback opens one run per
fold with those same arguments (``reinit="create_new"``: several runs open in one process), logs each
fold's epoch means at the epoch's end with the keys WandbLogger adds (``trainer/global_step``, the x axis
of every curve: the epoch's last step, as Lightning logs epoch-end values; and ``epoch``), and
finishes the runs when the group ends. A resumed group resumes the same runs (``resume="allow"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from ..run_plan import RunPlan
from ..wandb_runs import fold_logger_args

STEP_KEY = "trainer/global_step"  # WandbLogger's x axis


def wandb_init_args(logger_args: dict[str, Any]) -> dict[str, Any]:
    """``wandb.init`` arguments of a fold run given as ``WandbLogger`` arguments."""
    args = dict(logger_args)
    offline = args.pop("offline")
    args["dir"] = args.pop("save_dir")
    return {**args, "mode": "offline" if offline else "online", "reinit": "create_new"}


class FoldWandbRuns(L.Callback):
    """One W&B run per fold of the group (see the module docstring); `module.fold_epoch_means()` gives the
    values, in the order of `folds`."""

    def __init__(self, plan: RunPlan, run_dir: Path, folds: list[int]) -> None:
        self.plan, self.run_dir, self.folds = plan, run_dir, folds
        self.runs: list[Any] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import wandb  # only where the run logs to W&B (its import takes a while)

        for k in self.folds:
            config = self.plan.fold_config(k).values
            run = wandb.init(**wandb_init_args(fold_logger_args(self.plan, self.run_dir, k)), config=config)
            run.define_metric(STEP_KEY)
            run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
            self.runs.append(run)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for run, means in zip(self.runs, pl_module.fold_epoch_means()):
            run.log({**means, "epoch": trainer.current_epoch, STEP_KEY: trainer.global_step - 1})

    def finish(self) -> None:
        """Close every fold's run (also after a failure or Ctrl-C; a rerun resumes them)."""
        for run in self.runs:
            run.finish()
        self.runs = []
