"""A fold job: (run directory, fold index) → ``folds/fold_00k.csv``, resumable and exact.

The job rebuilds model, datamodule and Trainer from the run's config.yaml with the fold's index
and seed (``seed_everything + k``), trains in its own directory ``folds/fold_00k/`` (the
Trainer's ``default_root_dir``: Lightning's SLURM auto-resume looks for ``hpc_ckpt_*`` there and
nowhere else, so no fold can load another fold's weights), saves ``last.ckpt`` at every epoch end
and resumes from it. Before training, the job checks that its datamodule's fold is the one saved in
fold_plan.json. Its last weights predict the fold's test samples, or, when the config has a
ModelCheckpoint monitoring a val/* metric, that checkpoint's best weights, chosen on the fold's inner
validation subjects (files under ``folds/fold_00k/checkpoints/``). Rank 0 writes which weights
predicted and why (``folds/fold_00k.json``), then the predictions atomically, which marks the fold done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

from ..checkpoints import drop_previous, resume_checkpoint, save_resume_point
from ..paths import FoldPaths
from ..run_plan import RunConfig, RunPlan, check_fold_plan, instantiate, is_rank_zero
from ..wandb_runs import fold_logger_args
from .epoch_seeding import EpochSeeding
from .fold_outputs import write_fold_outputs
from .job import Job, JobStatus, Report
from .rank_gather import gather_predictions
from .trainer_calls import trainer_call
from .weight_selection import chosen_checkpoint, weight_chooser


@dataclass(frozen=True)
class FoldJob(Job):
    """Fold `k` of the run in `run_dir`, trained by a Trainer of its own."""

    run_dir: Path
    k: int

    @property
    def folds(self) -> tuple[int, ...]:
        return (self.k,)

    def train_and_predict(self, plan: RunPlan, report: Report | None) -> None:
        """Train the fold (resuming its last epoch-end checkpoint), predict, save."""
        k, paths = self.k, FoldPaths(self.run_dir, self.k)
        resume = resume_point(paths)
        callbacks = [EpochSeeding(plan.fold_seed(k)), EpochEndCheckpoint(paths.last_ckpt)]
        if report is not None:
            callbacks.append(JobStatus(self.name, report))
        cli = instantiate(fold_config(plan, self.run_dir, k), callbacks)
        trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
        check_fold_plan(self.run_dir, k, datamodule)
        for checkpoint in trainer.checkpoint_callbacks:
            if isinstance(checkpoint, ModelCheckpoint):  # the fold's own folder: no fold can load another's weights
                checkpoint.dirpath = os.path.realpath(paths.dir / "checkpoints")  # as resumes compare it
        try:
            with trainer_call(trainer):
                trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
            for stale in paths.dir.glob("hpc_ckpt_*.ckpt"):  # a requeue signal during fit: predict must not load it
                stale.unlink(missing_ok=True)
            with trainer_call(trainer):
                batches = trainer.predict(model, datamodule=datamodule, ckpt_path=chosen_checkpoint(weight_chooser(trainer), k))
        finally:
            if plan.wandb != "disabled":
                import wandb  # only where the run logs to W&B (its import takes a while)

                wandb.finish()
        index, probs = gather_predictions(batches)
        if trainer.is_global_zero:
            write_fold_outputs(self.run_dir, plan, k, trainer, datamodule, index, probs)
            drop_previous(paths)


class EpochEndCheckpoint(Checkpoint):
    """The fold's resume point ``last.ckpt``, saved at every training epoch end (after the epoch's
    validation, where Lightning's ModelCheckpoint saves too), atomically and by rank 0 only; the one it
    replaces stays as ``previous.ckpt`` until the fold is done."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        save_resume_point(trainer, self.path)


def fold_loggers(plan: RunPlan, run_dir: Path, k: int) -> list[dict[str, Any]]:
    """CSV logs in the fold's directory (a resumed fold adds a version) and its own W&B run (also
    under ``wandb agent``: see wandb_runs)."""
    paths = FoldPaths(run_dir, k)
    loggers: list[dict[str, Any]] = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(paths.dir), "name": "logs"}}
    ]
    if plan.wandb != "disabled":
        loggers.append({"class_path": "experiments.runner.wandb_logger.WandbLogger",
                        "init_args": fold_logger_args(plan, run_dir, k)})
    return loggers


def fold_config(plan: RunPlan, run_dir: Path, k: int) -> RunConfig:
    """The run's config for fold k: its index and seed, its own root directory and loggers. (The cluster
    environment is the CLI's: Lightning's SLURM one, auto-requeue on USR1, inside a SLURM job.)"""
    return plan.fold_config(k).with_trainer(
        default_root_dir=str(FoldPaths(run_dir, k).dir),
        logger=fold_loggers(plan, run_dir, k),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=True,
    )


def resume_point(paths: FoldPaths) -> Path | None:
    """The fold's epoch-end checkpoint to resume from (``last.ckpt``, or ``previous.ckpt`` when that one is
    damaged: :func:`~..checkpoints.resume_checkpoint`); anything else of an earlier attempt is removed.

    Lightning's mid-epoch ``hpc_ckpt_*`` (written on SLURM's requeue signal) are discarded: a
    resumed epoch restarts from its beginning so that the fold stays exact (Lightning would restore the
    epoch's batch counter, but neither a plain DataLoader's position in its shuffled order nor the
    mid-epoch state of the dropout and augmentation random streams). An epoch longer than the time
    limit therefore never ends; the workers' ``--max-requeues`` turns that into one failure line.
    """
    if not is_rank_zero():
        return paths.last_ckpt if paths.last_ckpt.is_file() else None
    if resume_checkpoint(paths, f"fold {paths.k}") is not None:
        for stale in paths.dir.glob("hpc_ckpt_*.ckpt"):
            stale.unlink(missing_ok=True)
        return paths.last_ckpt
    return None
