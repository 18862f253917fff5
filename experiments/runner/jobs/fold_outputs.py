"""The one writer of a fold's outputs, for every job: ``folds/fold_00k.json`` (which weights predicted
the fold and why, read by ``mer audit``), then ``folds/fold_00k.csv`` (its predictions), atomically;
the CSV's existence marks the fold done."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping

from ...atomic_files import atomic_write_csv, write_json
from ..paths import FoldPaths
from ..run_plan import RunPlan
from .weight_selection import weight_chooser


def write_fold_outputs(run_dir: Path, plan: RunPlan, k: int, trainer: L.Trainer, datamodule: Any, index: np.ndarray,
                       probs: np.ndarray, **record: Any) -> None:
    """Fold `k`'s record (:func:`fold_record`, then the job's own `record` entries) and its predictions
    (rows `index` of the table of `datamodule`, set to fold `k`; class probabilities `probs`)."""
    paths = FoldPaths(run_dir, k)
    write_json(paths.record, {**fold_record(k, trainer), **record})
    atomic_write_csv(paths.csv, prediction_table(datamodule, plan, k, index, probs))


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
