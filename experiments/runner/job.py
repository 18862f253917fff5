"""A fold job: (run directory, fold index) → ``folds/fold_00k.csv``, resumable and exact.

The job rebuilds model, datamodule and Trainer from the run's config.yaml with the fold's index
and seed (``seed_everything + k``), trains in its own directory ``folds/fold_00k/`` (the
Trainer's ``default_root_dir``: Lightning's SLURM auto-resume looks for ``hpc_ckpt_*`` there and
nowhere else, so no fold can load another fold's weights), saves ``last.ckpt`` at every epoch end
and resumes from it. Its last weights predict the fold's held-out subject(s); rank 0 writes the
predictions atomically, which marks the fold done.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Checkpoint

from ..lightning_cli import deliberate_environment
from ..reporting import atomic_write_csv, write_json
from .folds import FoldPaths
from .gather import gather_predictions
from .plan import RunPlan, instantiate, is_rank_zero, with_trainer
from .seeding import EpochSeeding

Report = Callable[[str], None]


class FoldStatus(L.Callback):
    """Reports 'fold k ep e/E' to the executor's progress bar."""

    def __init__(self, k: int, report: Report) -> None:
        self.k, self.report = k, report

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.report(f"fold {self.k} ep {trainer.current_epoch + 1}/{trainer.max_epochs}")


class EpochEndCheckpoint(Checkpoint):
    """The fold's resume point ``last.ckpt``, saved at every training epoch end (after the epoch's
    validation, where Lightning's ModelCheckpoint saves too), atomically and by rank 0 only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


def fold_loggers(plan: RunPlan, run_dir: Path, k: int) -> list[dict[str, Any]]:
    """CSV logs in the fold's directory (a resumed fold adds a version) and its W&B run."""
    paths = FoldPaths(run_dir, k)
    loggers: list[dict[str, Any]] = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(paths.dir), "name": "logs"}}
    ]
    if plan.wandb != "disabled":
        loggers.append({"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {
            "project": plan.wandb_project, "group": plan.group, "job_type": "fold",
            "name": f"fold-{k:03d}-{'-'.join(plan.test_subjects[k])}", "id": f"{plan.group}-fold-{k:03d}",
            "resume": "allow", "save_dir": str(run_dir), "offline": plan.wandb == "offline"}})
    return loggers


def fold_config(plan: RunPlan, run_dir: Path, k: int) -> dict[str, Any]:
    """The run's config for fold k: its index and seed, its own root directory and loggers. (The cluster
    environment is the CLI's: Lightning's SLURM one, auto-requeue on USR1, inside a SLURM job.)"""
    config = with_trainer(
        plan.config,
        default_root_dir=str(FoldPaths(run_dir, k).dir),
        logger=fold_loggers(plan, run_dir, k),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=True,
    )
    config["seed_everything"] = plan.base_seed + k
    config["data"]["init_args"]["fold"] = k
    return config


def resume_point(paths: FoldPaths) -> Path | None:
    """The fold's epoch-end checkpoint to resume from; anything else of an earlier attempt is removed.

    Lightning's mid-epoch ``hpc_ckpt_*`` (written on SLURM's requeue signal) are discarded: a
    resumed epoch restarts from its beginning so that the fold stays exact.
    """
    if not is_rank_zero():
        return paths.last_ckpt if paths.last_ckpt.is_file() else None
    if paths.last_ckpt.is_file():
        for stale in [*paths.dir.glob("hpc_ckpt_*.ckpt"), *paths.dir.glob(".*.tmp*")]:
            stale.unlink(missing_ok=True)
        return paths.last_ckpt
    shutil.rmtree(paths.dir, ignore_errors=True)
    return None


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt(trainer: L.Trainer) -> Iterator[None]:
    """Lightning turns Ctrl-C into ``sys.exit(1)`` (and ignores SIGINT from then on); undo both."""
    try:
        yield
    except SystemExit:
        if not trainer.interrupted:
            raise
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt from None


@contextlib.contextmanager
def lightning_answers_requeue() -> Iterator[None]:
    """While a Trainer runs, Lightning's SLURM handler answers USR1 (it installs itself only over the
    default handler); before and after, the executor's own handler does (local.requeue_between_folds)."""
    previous = signal.getsignal(signal.SIGUSR1)
    if not callable(previous):
        yield
        return
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


@contextlib.contextmanager
def trainer_call(trainer: L.Trainer) -> Iterator[None]:
    """Around each Trainer call of a fold: Ctrl-C as KeyboardInterrupt, the deliberate cluster
    environment, and Lightning's handler answering SLURM's requeue signal."""
    with interrupts_as_keyboard_interrupt(trainer), deliberate_environment(), lightning_answers_requeue():
        yield


def run_fold(run_dir: Path, k: int, report: Report | None = None, plan: RunPlan | None = None) -> None:
    """Train fold `k` of the run in `run_dir` (resuming its last epoch-end checkpoint), predict, save."""
    plan = plan or RunPlan.load(run_dir)
    paths = FoldPaths(run_dir, k)
    if paths.done():
        return
    torch.set_num_threads(plan.threads_per_fold)
    torch.use_deterministic_algorithms(True, warn_only=True)
    resume = resume_point(paths)
    callbacks = [EpochSeeding(plan.base_seed + k), EpochEndCheckpoint(paths.last_ckpt)]
    if report is not None:
        callbacks.append(FoldStatus(k, report))
    cli = instantiate(fold_config(plan, run_dir, k), callbacks)
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    try:
        with trainer_call(trainer):
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
        for stale in paths.dir.glob("hpc_ckpt_*.ckpt"):  # a requeue signal during fit: predict must not load it
            stale.unlink(missing_ok=True)
        with trainer_call(trainer):
            batches = trainer.predict(model, datamodule=datamodule)
    finally:
        if plan.wandb != "disabled":
            import wandb

            wandb.finish()
    index, probs = gather_predictions(batches)
    if trainer.is_global_zero:
        write_json(paths.record, fold_record(k, trainer))
        atomic_write_csv(paths.csv, prediction_table(datamodule, plan, k, index, probs))


def fold_record(k: int, trainer: L.Trainer) -> dict[str, Any]:
    """Provenance of a fold's predictions: the weights of its last training epoch (nothing is
    selected on the held-out subjects), read by ``mer audit``."""
    return {"fold": k, "weights": "last_epoch", "epochs_trained": trainer.current_epoch,
            "global_step": trainer.global_step, "reason": "last epoch of the configured training, no checkpoint selection"}


def prediction_table(datamodule: Any, plan: RunPlan, k: int, index: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """The fold's predictions, one row per held-out sample; checks they cover exactly the fold's test set."""
    expected = set(datamodule.split()["test"].tolist())
    if set(index.tolist()) != expected or len(index) != len(expected):
        raise RuntimeError(f"{plan.fold_name(k)}: predictions do not cover exactly its test samples")
    rows = datamodule.table.iloc[index]
    if not set(rows["subject"].astype(str)) <= set(plan.test_subjects[k]):
        raise RuntimeError(f"{plan.fold_name(k)}: predicted samples of other subjects")
    frame = pd.DataFrame({
        "sample_id": rows["sample_id"].to_numpy(),
        "subject": rows["subject"].astype(str).to_numpy(),
        "dataset": rows["dataset"].to_numpy(),
        "fold": k,
        "label": rows["label"].to_numpy(),
        "pred": probs.argmax(1),
    })
    for c, name in enumerate(plan.class_names):
        frame[f"prob_{name}"] = probs[:, c]
    return frame
