"""Which weights predict a fold: those after its last epoch, or the checkpoint a ModelCheckpoint chose
on the fold's inner validation split; checked when the run is planned, applied by the fold job,
recorded in the fold's record. Nothing is ever selected on the held-out subjects."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from datamodules.errors import MERError


def selecting_callbacks(callbacks: list[Any]) -> list[Any]:
    """The callbacks that look at a logged metric: ModelCheckpoint (chooses weights) and EarlyStopping."""
    return [c for c in callbacks if isinstance(c, (ModelCheckpoint, EarlyStopping)) and c.monitor]


def check_weight_selection(callbacks: list[Any], val_subjects: int) -> None:
    """A fold's weights may be chosen (ModelCheckpoint) only on its inner validation split (a val/* metric),
    and training stopped early (EarlyStopping) only on it or on training metrics; never on test data."""
    selecting = selecting_callbacks(callbacks)
    for callback in selecting:
        allowed = ("val/",) if isinstance(callback, ModelCheckpoint) else ("val/", "train/")
        if not str(callback.monitor).startswith(allowed):
            raise MERError(f"{type(callback).__name__} monitors '{callback.monitor}': a fold's "
                           f"{'predicting weights may be chosen' if isinstance(callback, ModelCheckpoint) else 'training may stop'} "
                           f"on {' or '.join(a + '*' for a in allowed)} metrics only (e.g. val/uf1 with data.val_subjects > 0)")
        if callback.monitor.startswith("val/") and not val_subjects:
            raise MERError(f"{type(callback).__name__} monitors '{callback.monitor}' but data.val_subjects is 0 (no inner "
                           "validation split): set data.val_subjects to hold out training subjects for validation")
    if sum(isinstance(c, ModelCheckpoint) for c in selecting) > 1:
        raise MERError("several ModelCheckpoint callbacks monitor a metric: keep one, it chooses the weights that predict each fold")


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
