"""`mer audit RUN_DIR`: the honesty checks of a pooled run, one verdict each.

1. pooled = fold files: predictions.csv is the concatenation of folds/fold_*.csv in fold order.
2. metrics recompute: every metric of metrics.json follows from predictions.csv (recomputed with
   numpy, independently of the torchmetrics code that wrote it); counts exactly, scores within
   ``SCORE_TOLERANCE`` (metrics.json holds torchmetrics' float32 values).
3. subjects disjoint: in fold_plan.json no fold's test subject is among its training or validation
   subjects, and every predicted sample of a fold belongs to one of its test subjects.
4. tested once: each fold predicts exactly its planned test samples, once each, and no sample is
   tested by two folds (LOSO, k-fold, and an official split: one fold whose test sets are disjoint);
   under an official split each sample is scored in the test set fold_plan.json gives it.
5. weights: each fold was predicted by its last epoch's weights (all configured epochs, or fewer
   under early stopping) or by a checkpoint chosen on its inner validation split, as its provenance
   record folds/fold_00k.json says; anything else, or no record, fails.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic_files import write_json
from ..runner.paths import FoldPaths
from ..runner.run_plan import RunConfig
from .run_files import FoldPlan, RunFiles, read_predictions, read_record, sample_keys
from .scores import Averaging, averaging, confusion, metrics_from_confusion

SCORE_TOLERANCE = 1e-6  # float32 rounding of metrics.json; one changed prediction moves a score by >= 1/n
NOT_METRICS = ("config", "config_hash")  # what runner.pooling stores beside the metrics
GROUPED_METRICS = (("per_dataset", "dataset"), ("per_test_set", "test_set"))  # metrics.json key, predictions column
LIGHTNING_DEFAULT_EPOCHS = 1000  # Trainer(max_epochs=None, max_steps=-1)
SHOWN = 3  # problems named per verdict line; the rest are counted


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    reason: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name:<24}{self.reason}"


def verdict(name: str, problems: list[str], success: str) -> Check:
    """PASS with `success`, or FAIL naming the first problems and counting the rest."""
    if not problems:
        return Check(name, True, success)
    more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
    return Check(name, False, "; ".join(problems[:SHOWN]) + more)


@dataclass
class AuditResult:
    """The verdicts on one run directory and its pooled vs per-subject/per-fold scores."""

    target: Path
    checks: list[Check]
    averaging: Averaging

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def report(self) -> str:
        failed = sum(not check.passed for check in self.checks)
        summary = (f"audit PASSED: {len(self.checks)} checks" if not failed
                   else f"audit FAILED: {failed} of {len(self.checks)} checks")
        return "\n".join([check.line() for check in self.checks] + self.averaging.lines() + [f"{summary} ({self.target})"])

    def to_dict(self) -> dict[str, Any]:
        return {"target": str(self.target), "passed": self.passed, "checks": [asdict(check) for check in self.checks],
                "averaging": self.averaging.to_dict()}


def audit_run(run_dir: Path, output: Path | None = None) -> AuditResult:
    """Every check of a pooled run directory; writes `output` (default RUN_DIR/audit.json) atomically."""
    run_dir = Path(run_dir)
    run = RunFiles.load(run_dir)
    checks = [check_pooled_files(run), check_metrics(run), check_subjects(run), check_tested_once(run),
              check_weights(run)]
    predictions = run.predictions
    one_subject_per_fold = predictions["fold"].nunique() == predictions["subject"].nunique()  # LOSO: the same means
    result = AuditResult(run_dir, checks, averaging(predictions, "label", "pred",
                                                    ["subject"] if one_subject_per_fold else ["subject", "fold"]))
    write_json(output or run_dir / "audit.json", result.to_dict())
    return result


def check_pooled_files(run: RunFiles) -> Check:
    name = "pooled = fold files"
    paths = [FoldPaths(run.run_dir, k).csv for k in range(run.plan.n_folds)]
    missing = [f"folds/{path.name} missing" for path in paths if not path.is_file()]
    if missing:
        return verdict(name, missing, "")
    tables, unreadable = [], []
    for path in paths:
        try:
            tables.append(read_predictions(path))
        except (OSError, ValueError) as err:  # pandas' parser errors are ValueErrors
            unreadable.append(f"folds/{path.name} unreadable ({type(err).__name__}: {' '.join(str(err).split())})")
    if unreadable:
        return verdict(name, unreadable, "")
    difference = first_difference(run.predictions, pd.concat(tables, ignore_index=True))
    return verdict(name, [f"predictions.csv differs from the fold files: {difference}"] if difference else [],
                   f"predictions.csv is the concatenation of the {len(paths)} fold files")


def first_difference(pooled: pd.DataFrame, folds: pd.DataFrame) -> str | None:
    """Where predictions.csv first differs from the concatenated fold files (None: nowhere)."""
    if list(pooled.columns) != list(folds.columns):
        return f"columns {list(pooled.columns)} vs {list(folds.columns)}"
    if len(pooled) != len(folds):
        return f"{len(pooled)} rows vs {len(folds)}"
    for column in pooled.columns:
        a, b = pooled[column].to_numpy(), folds[column].to_numpy()
        same = np.isclose(a, b, rtol=0, atol=1e-9, equal_nan=True) if a.dtype.kind == "f" and b.dtype.kind == "f" else a == b
        if not same.all():
            row = int(np.argmin(same))
            return f"row {row + 2} ({sample_keys(pooled).iloc[row]}), column {column}: {a[row]} vs {b[row]}"
    return None


def check_metrics(run: RunFiles) -> Check:
    name = "metrics recompute"
    class_names = run.plan.class_names
    predictions = run.predictions
    for column in ("label", "pred"):
        values = pd.to_numeric(predictions[column], errors="coerce")
        bad = ~values.isin(range(len(class_names)))
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            return verdict(name, [f"predictions.csv: sample {sample_keys(predictions).iloc[row]} has {column} "
                                  f"{predictions[column].iloc[row]!r}, not a class index 0..{len(class_names) - 1}"], "")
    expected = recompute_metrics(predictions, class_names)
    problems = [f"metrics.json holds {key!r}, which the audit cannot recompute" for key in run.metrics
                if key not in expected and key not in NOT_METRICS]
    problems += metric_differences(run.metrics, expected, "")
    return verdict(name, problems, f"all {count_leaves(expected)} entries of metrics.json recomputed from predictions.csv")


def recompute_metrics(predictions: pd.DataFrame, class_names: list[str]) -> dict[str, Any]:
    """metrics.json's metrics (``pooled_metrics``) and the run's class names (run.json), recomputed from
    the predictions with numpy."""
    def of(frame: pd.DataFrame) -> dict[str, Any]:
        labels, preds = frame["label"].to_numpy(int), frame["pred"].to_numpy(int)
        return metrics_from_confusion(confusion(labels, preds, len(class_names)), class_names)

    result = {**of(predictions), "class_names": list(class_names)}
    result["n_folds"] = int(predictions["fold"].nunique())
    for key, column in GROUPED_METRICS:
        if column in predictions.columns:
            result[key] = {str(name): of(group) for name, group in predictions.groupby(column, sort=True)}
    return result


def metric_differences(stored: Any, expected: Any, path: str) -> list[str]:
    """'per_dataset.casme2.uf1: metrics.json 0.51, predictions.csv give 0.48' for every value that differs."""
    if isinstance(expected, dict):
        if not isinstance(stored, dict):
            return [f"{path.rstrip('.')}: metrics.json holds {stored!r}, not a mapping"]
        return [line for key, value in expected.items()
                for line in (metric_differences(stored[key], value, f"{path}{key}.") if key in stored
                             else [f"metrics.json lacks {path}{key}"])]
    path = path.rstrip(".")
    if isinstance(expected, float):
        same = isinstance(stored, (int, float)) and abs(stored - expected) <= SCORE_TOLERANCE
    else:
        same = stored == expected
    return [] if same else [f"{path}: metrics.json {stored}, predictions.csv give {expected}"]


def count_leaves(value: Any) -> int:
    return sum(count_leaves(v) for v in value.values()) if isinstance(value, dict) else 1


def fold_plan_or_failure(run: RunFiles, name: str) -> FoldPlan | Check:
    return run.fold_plan if isinstance(run.fold_plan, FoldPlan) else verdict(name, [run.fold_plan], "")


def check_subjects(run: RunFiles) -> Check:
    name = "subjects disjoint"
    plan = fold_plan_or_failure(run, name)
    if isinstance(plan, Check):
        return plan
    problems = []
    for k, fold in plan.folds.items():
        for role, subjects in (("training", fold.train_subjects), ("validation", fold.val_subjects)):
            problems += [f"fold {k}: test subject '{s}' is also in its {role} subjects (fold_plan.json)"
                         for s in sorted(fold.test_subjects & subjects)]
        problems += [f"fold {k}: validation subject '{s}' is also in its training subjects (fold_plan.json)"
                     for s in sorted(fold.val_subjects & fold.train_subjects)]
    if plan.kind in ("loso", "kfold"):  # every subject of the plan is held out by exactly one fold
        tested = Counter(s for fold in plan.folds.values() for s in fold.test_subjects)
        everyone = set().union(*(f.train_subjects | f.val_subjects | f.test_subjects for f in plan.folds.values()))
        problems += [f"subject '{s}' is held out by {tested[s]} folds; a {plan.kind} plan holds out every subject "
                     "exactly once (fold_plan.json)" for s in sorted(everyone) if tested[s] != 1]
    keys = sample_keys(run.predictions)
    for row, (k, subject) in enumerate(zip(run.predictions["fold"], run.predictions["subject"])):
        if k in plan.folds and subject not in plan.folds[k].test_subjects:
            problems.append(f"fold {k}: sample {keys.iloc[row]} of subject '{subject}' is predicted, but its test "
                            f"subjects are {', '.join(sorted(plan.folds[k].test_subjects))}")
    return verdict(name, problems, f"no test subject of the {len(plan.folds)} folds is among its fold's training or "
                                   "validation subjects")


def check_tested_once(run: RunFiles) -> Check:
    name = "tested once"
    plan = fold_plan_or_failure(run, name)
    if isinstance(plan, Check):
        return plan
    predictions = run.predictions.assign(key=sample_keys(run.predictions))
    problems = []
    for k in sorted(set(predictions["fold"]) - set(plan.folds)):
        problems.append(f"predictions.csv has rows of fold {k}, which fold_plan.json does not plan")
    for k, fold in plan.folds.items():
        counts = predictions.loc[predictions["fold"] == k, "key"].value_counts()
        problems += [f"fold {k}: sample {key} is predicted {n} times" for key, n in counts.items() if n > 1]
        problems += [f"fold {k}: test sample {key} has no prediction" for key in fold.test_samples if key not in counts]
        planned = set(fold.test_samples)
        problems += [f"fold {k}: sample {key} is predicted but is not among its test samples (fold_plan.json)"
                     for key in counts.index if key not in planned]
        if fold.test_set_of and "test_set" in predictions.columns:
            rows = predictions[predictions["fold"] == k]
            problems += [f"fold {k}: sample {key} is scored in test set {name}, fold_plan.json puts it in "
                         f"{fold.test_set_of.get(key)}" for key, name in zip(rows["key"], rows["test_set"].astype(str))
                         if fold.test_set_of.get(key) != name]
    folds_of = predictions.groupby("key")["fold"].unique()
    problems += [f"sample {key} is tested by folds {', '.join(map(str, sorted(folds)))}"
                 for key, folds in folds_of.items() if len(folds) > 1]
    if plan.kind in ("loso", "kfold") and plan.n_samples is not None and len(folds_of) != plan.n_samples:
        problems.append(f"{len(folds_of)} samples are tested, but the data had {plan.n_samples} when the run was planned "
                        f"(fold_plan.json n_samples): a {plan.kind} run tests every sample")
    return verdict(name, problems, f"each of the {len(folds_of)} samples is tested exactly once ({plan.kind})")


def configured_length(config: RunConfig) -> tuple[int, int | None]:
    """(max_epochs, max_steps or None) of the config's trainer, with Lightning's defaults."""
    max_steps = config.max_steps
    steps = int(max_steps) if max_steps not in (None, -1) else None
    epochs = config.max_epochs
    if epochs is None:
        epochs = -1 if steps is not None else LIGHTNING_DEFAULT_EPOCHS
    return int(epochs), steps


def check_weights(run: RunFiles) -> Check:
    name = "weights not from test"
    epochs, steps = configured_length(run.plan.config)
    problems = []
    for k in range(run.plan.n_folds):
        record = read_record(FoldPaths(run.run_dir, k))
        problem = record if isinstance(record, str) else weights_problem(record, k, run.fold_plan, epochs, steps)
        if problem:
            problems.append(f"fold {k}: {problem}")
    return verdict(name, problems, f"each of the {run.plan.n_folds} folds was predicted by its last epoch or a "
                                   "checkpoint chosen on its inner validation split (folds/fold_*.json)")


def weights_problem(record: dict[str, Any], k: int, fold_plan: FoldPlan | str, epochs: int, steps: int | None) -> str | None:
    """Why a fold's provenance record (``job.fold_record``) does not show honest weights (None: it does).

    'last_epoch': all configured epochs (or steps) trained, fewer when the model's own schedule stopped
    the fit (``training_ended: should_stop``, e.g. Xie et al.'s stage 4), or when its ``early_stopping``
    entry names a monitored metric that is not a test metric. 'inner_validation': a checkpoint chosen on a
    metric that is not a test metric, in a fold that has validation subjects."""
    source = f"folds/fold_{k:03d}.json"
    if record.get("fold") != k:
        return f"{source} is the record of fold {record.get('fold')!r}"
    weights = record.get("weights")
    if weights == "last_epoch":
        trained, step = record.get("epochs_trained"), record.get("global_step")
        stopper = record.get("early_stopping")
        if isinstance(stopper, dict):
            return monitor_problem(stopper.get("monitor"), "training stopped early", source)
        if trained == epochs or (steps is not None and step == steps):
            return None
        if record.get("training_ended") == "should_stop":  # the model's own schedule ended it (Xie et al.'s stages)
            return None
        limit = f"{epochs} epochs" + (f" or {steps} steps" if steps is not None else "")
        return (f"predicted by the weights after {trained} epoch(s) (step {step}), but the config trains {limit} "
                f"and nothing stopped training early ({source})")
    if weights == "inner_validation":
        problem = monitor_problem(record.get("monitor"), "weights chosen", source)
        if problem:
            return problem
        if not isinstance(fold_plan, FoldPlan):
            return f"weights chosen on a validation split that cannot be checked: {fold_plan}"
        if not fold_plan.folds[k].val_subjects:
            return f"weights chosen on a validation split ({source}), but fold_plan.json gives the fold no validation subjects"
        return None
    return (f"predicted by weights {weights!r} ({source}), neither its last epoch's nor a checkpoint chosen on "
            "its inner validation split")


def monitor_problem(monitor: Any, what: str, source: str) -> str | None:
    """None when `monitor` names a metric that is not computed on test data."""
    if monitor and "test" not in str(monitor).lower():
        return None
    return f"{what} on {monitor or 'an unnamed metric'} ({source}), not on an inner validation metric"
