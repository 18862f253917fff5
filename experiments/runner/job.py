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

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, ModelCheckpoint

from datamodules.errors import MERError

from ..lightning_cli import deliberate_environment
from ..reporting import atomic_write_csv, write_json
from .folds import FoldPaths
from .gather import gather_predictions
from .plan import FOLD_PLAN, RunPlan, instantiate, is_rank_zero, selecting_callbacks, with_trainer
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
    """CSV logs in the fold's directory (a resumed fold adds a version) and its own W&B run (also
    under ``wandb agent``: see wandb_runs)."""
    from .wandb_runs import fold_logger_args

    paths = FoldPaths(run_dir, k)
    loggers: list[dict[str, Any]] = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(paths.dir), "name": "logs"}}
    ]
    if plan.wandb != "disabled":
        loggers.append({"class_path": "lightning.pytorch.loggers.WandbLogger",
                        "init_args": fold_logger_args(plan, run_dir, k)})
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
    check_fold_plan(run_dir, k, datamodule)
    for checkpoint in trainer.checkpoint_callbacks:
        if isinstance(checkpoint, ModelCheckpoint):  # the fold's own folder: no fold can load another's weights
            checkpoint.dirpath = os.path.realpath(paths.dir / "checkpoints")  # as resumes compare it
    try:
        with trainer_call(trainer):
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
        for stale in paths.dir.glob("hpc_ckpt_*.ckpt"):  # a requeue signal during fit: predict must not load it
            stale.unlink(missing_ok=True)
        chooser = weight_chooser(trainer)
        with trainer_call(trainer):
            batches = trainer.predict(model, datamodule=datamodule, ckpt_path=chosen_checkpoint(chooser, k))
    finally:
        if plan.wandb != "disabled":
            import wandb

            wandb.finish()
    index, probs = gather_predictions(batches)
    if trainer.is_global_zero:
        write_json(paths.record, fold_record(k, trainer))
        atomic_write_csv(paths.csv, prediction_table(datamodule, plan, k, index, probs))


def check_fold_plan(run_dir: Path, k: int, datamodule: Any) -> None:
    """The datamodule's fold `k` (subjects by role, test samples) must be fold_plan.json's fold `k`."""
    path = run_dir / FOLD_PLAN
    try:
        saved = json.loads(path.read_text())["folds"][k]
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise MERError(f"{path} has no readable fold {k} ({type(err).__name__}: {err}); plan the run again with mer loso") from None
    if saved != datamodule.fold_plan_record()["folds"][k]:
        raise MERError(f"fold {k}: the data's fold differs from {path} (did the data or its annotations change since "
                       "planning?); start a new run with another --output")


def weight_chooser(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The ModelCheckpoint that chooses the predicting weights on the inner validation split, if any (plan
    checks allow one, monitoring val/*)."""
    return next((c for c in selecting_callbacks(trainer.callbacks) if isinstance(c, ModelCheckpoint)), None)


def chosen_checkpoint(chooser: ModelCheckpoint | None, k: int) -> str | None:
    """The checkpoint that predicts fold `k`: the chooser's best (None: the weights after the last epoch)."""
    if chooser is None:
        return None
    if not chooser.best_model_path:
        raise MERError(f"fold {k}: ModelCheckpoint on {chooser.monitor} saved no checkpoint (did validation run? "
                       "check trainer.check_val_every_n_epoch and data.val_subjects)")
    return chooser.best_model_path


def fold_record(k: int, trainer: L.Trainer) -> dict[str, Any]:
    """Provenance of a fold's predictions, read by ``mer audit``: ``weights`` 'last_epoch' (the weights
    after the last trained epoch) or 'inner_validation' (the best checkpoint of a ModelCheckpoint
    monitoring a val/* metric, i.e. chosen on the fold's inner validation subjects; ``checkpoint``
    relative to the fold's folder); ``training_ended`` says what ended training (see
    :func:`training_end`). Nothing is ever selected on the test samples."""
    ended, stopper = training_end(trainer)
    record: dict[str, Any] = {"fold": k, "epochs_trained": trainer.current_epoch, "global_step": trainer.global_step,
                              "max_epochs": trainer.max_epochs, "max_steps": trainer.max_steps, "training_ended": ended}
    if stopper is not None:
        record["early_stopping"] = {"monitor": stopper.monitor, "mode": stopper.mode, "patience": stopper.patience,
                                    "stopped_epoch": stopper.stopped_epoch}
    chooser = weight_chooser(trainer)
    if chooser is None:
        return {**record, "weights": "last_epoch", "reason": f"the weights after the last trained epoch ({ENDINGS[ended]}"
                f"{' on ' + stopper.monitor if stopper else ''}), no checkpoint selection"}
    path = Path(chooser.best_model_path)
    score = chooser.best_model_score
    return {**record, "weights": "inner_validation", "checkpoint": os.path.relpath(path, trainer.default_root_dir),
            "checkpoint_epoch": int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["epoch"]),
            "monitor": chooser.monitor, "mode": chooser.mode, "score": None if score is None else float(score),
            "reason": f"best {chooser.monitor} ({chooser.mode}) on the fold's inner validation subjects among the "
                      "checkpoints its ModelCheckpoint saved"}


ENDINGS = {
    "max_epochs": "all configured epochs trained",
    "max_steps": "the configured max_steps reached",
    "early_stopping": "stopped early by EarlyStopping",
    "should_stop": "the model or a callback set trainer.should_stop, e.g. Xie et al.'s stage schedule",
}


def training_end(trainer: L.Trainer) -> tuple[str, EarlyStopping | None]:
    """What ended a finished fit (a key of ENDINGS), and the EarlyStopping that stopped it, if one did."""
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping) and c.stopped_epoch), None)
    if stopper is not None:
        return "early_stopping", stopper
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return "max_steps", None
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return "max_epochs", None
    return "should_stop", None


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
    test_sets = datamodule.official_sets()
    if test_sets is not None:  # an official split: which test set each sample belongs to (e.g. DFME's testA/testB)
        frame.insert(frame.columns.get_loc("fold") + 1, "test_set", test_sets[index])
    for c, name in enumerate(plan.class_names):
        frame[f"prob_{name}"] = probs[:, c]
    return frame
