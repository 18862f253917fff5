"""The files of a pooled run that the audit reads: run.json/config.yaml, predictions.csv, metrics.json,
fold_plan.json, and per fold its predictions and provenance record (``experiments.runner.paths``).

A missing run or an unpooled one is a user error (one line); a missing or malformed fold plan is
not: it leaves the checks that need it unverifiable, so they fail and say why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from datamodules.errors import MERError

from ..runner.paths import FoldPaths
from ..runner.run_plan import RunPlan

TEXT_COLUMNS = {"sample_id": str, "subject": str, "dataset": str}
PREDICTION_COLUMNS = ("sample_id", "subject", "dataset", "fold", "label", "pred")
SUBJECT_ROLES = ("train_subjects", "val_subjects", "test_subjects")


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions CSV of the runner (ids and subjects kept as text: '006' stays '006')."""
    return pd.read_csv(path, dtype=TEXT_COLUMNS)


def sample_keys(predictions: pd.DataFrame) -> pd.Series:
    """'<dataset>/<sample_id>' of every row: a sample's key in fold_plan.json."""
    return predictions["dataset"].astype(str) + "/" + predictions["sample_id"].astype(str)


@dataclass(frozen=True)
class PlannedFold:
    """One fold of fold_plan.json: its subjects by role and its test samples."""

    train_subjects: frozenset[str]
    val_subjects: frozenset[str]
    test_subjects: frozenset[str]
    test_samples: tuple[str, ...]
    test_set_of: dict[str, str]  # sample key -> its official test set (empty: no official split)


@dataclass(frozen=True)
class FoldPlan:
    kind: str  # loso | kfold | official
    folds: dict[int, PlannedFold]
    n_samples: int | None = None  # samples of the data when planned (None in plans written before it was recorded)


def load_fold_plan(run_dir: Path, n_folds: int) -> FoldPlan | str:
    """The run's fold plan, or why it cannot be used (missing, malformed, other folds than run.json's)."""
    path = run_dir / "fold_plan.json"
    if not path.is_file():
        return f"{path.name} missing (the runner saves it before training): the folds cannot be checked against their plan"
    try:
        data = json.loads(path.read_text())
        folds = {int(fold["fold"]): PlannedFold(
            *(frozenset(str(s) for s in fold[role]) for role in SUBJECT_ROLES),
            tuple(str(s) for s in fold["test_samples"]),
            {str(key): str(name) for name, keys in fold.get("test_sets", {}).items() for key in keys})
            for fold in data["folds"]}
        kind = str(data["kind"])
        n_samples = int(data["n_samples"]) if "n_samples" in data else None
    except (OSError, ValueError, TypeError, KeyError) as err:
        return f"{path.name} unreadable ({type(err).__name__}: {err}); it must follow the documented fold plan format"
    if sorted(folds) != list(range(n_folds)):
        return f"{path.name} plans folds {sorted(folds)}, but run.json has folds 0..{n_folds - 1}"
    return FoldPlan(kind, folds, n_samples)


def read_record(paths: FoldPaths) -> dict[str, Any] | str:
    """A fold's provenance record (``runner.jobs.fold_outputs.fold_record``), or why it cannot be read."""
    name = f"folds/{paths.record.name}"
    if not paths.record.is_file():
        return f"{name} missing: which weights predicted the fold is unknown"
    try:
        record = json.loads(paths.record.read_text())
    except (OSError, ValueError) as err:
        return f"{name} unreadable ({err})"
    return record if isinstance(record, dict) else f"{name} is not a JSON object"


@dataclass
class RunFiles:
    """What the audit reads of a pooled run directory."""

    run_dir: Path
    plan: RunPlan
    predictions: pd.DataFrame
    metrics: dict[str, Any]
    fold_plan: FoldPlan | str

    @classmethod
    def load(cls, run_dir: Path) -> RunFiles:
        if not run_dir.is_dir():
            raise MERError(f"{run_dir} is not a directory: give a run directory of `mer loso` (or --predictions FILE.csv)")
        plan = RunPlan.load(run_dir)
        pooled = [run_dir / "predictions.csv", run_dir / "metrics.json"]
        if not all(path.is_file() for path in pooled):
            raise MERError(f"{run_dir} is not pooled yet (no predictions.csv/metrics.json); finish or pool it with "
                           f"`mer loso --aggregate-only {run_dir}`, then audit it")
        try:
            predictions = read_predictions(pooled[0])
            metrics = json.loads(pooled[1].read_text())
        except (OSError, ValueError) as err:
            raise MERError(f"{run_dir}: predictions.csv or metrics.json unreadable ({err}); pool it again with "
                           f"`mer loso --aggregate-only {run_dir}`") from None
        missing = [column for column in PREDICTION_COLUMNS if column not in predictions.columns]
        if missing:
            raise MERError(f"{pooled[0]} lacks the columns {missing}; pool it again with `mer loso --aggregate-only {run_dir}`")
        return cls(run_dir, plan, predictions, metrics, load_fold_plan(run_dir, plan.n_folds))
