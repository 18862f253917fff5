"""Pooling a run: predictions.csv, metrics.json, confusion_matrix.png, the printed table and W&B's 'pooled' run.

A separate step, safe to rerun (``mer loso --aggregate-only DIR``, the SLURM aggregation job, or
automatically after the last fold): it reads the finished fold files only, writes atomically,
holds a lock so that two aggregations of one run never interleave, and names the missing folds
(with the command that runs them) instead of pooling an incomplete run.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from ..atomic_files import atomic_write_csv, damaged, write_json
from ..audit.checks import audit_run
from ..audit.run_files import PREDICTION_COLUMNS
from ..metrics import pooled_metrics
from ..plots import plot_confusion_matrix
from .fold_selection import format_folds
from .options import WandbOptions
from .paths import FoldPaths
from .run_plan import RunPlan
from .wandb_runs import pooled_run, pooled_run_holds, remember_pooled


def missing_folds(run_dir: Path, plan: RunPlan) -> list[int]:
    return [k for k in range(plan.n_folds) if not FoldPaths(run_dir, k).done()]


def finish_command(run_dir: Path, plan: RunPlan, folds: list[int], executor: Sequence[str] = ()) -> str:
    """The command that runs `folds` of this run with its own resolved config (and the `executor`
    arguments it was started with, when known: ``LosoOptions.executor_arguments``)."""
    command = ["mer", "loso", "--config", str(run_dir / "config.yaml"), "--output", str(run_dir), *executor]
    if folds != list(range(plan.n_folds)):
        command += ["--folds", format_folds(folds)]
    return shlex.join(command + WandbOptions(plan.wandb, plan.wandb_project).arguments())


SHOWN_MISSING = 8  # folds named in the message; the finish command covers them all


def describe_missing(run_dir: Path, plan: RunPlan, missing: list[int]) -> str:
    """'6 of 8 folds finished ...; still to do: fold 3 (subject 04), ...; finish with: mer loso ...'."""
    names = ", ".join(plan.fold_name(k) for k in missing[:SHOWN_MISSING])
    if len(missing) > SHOWN_MISSING:
        names += f" and {len(missing) - SHOWN_MISSING} more"
    return (f"{plan.n_folds - len(missing)} of {plan.n_folds} folds finished in {run_dir}; still to do: {names}. "
            f"Pooled metrics are written once all are done; finish with: {finish_command(run_dir, plan, missing)}")


def aggregate(run_dir: Path) -> dict[str, Any] | None:
    """Pool the finished folds of `run_dir` and audit the result (``mer audit``: exit 1 when a check
    fails); None (and the missing folds printed) when some folds are missing."""
    run_dir = Path(run_dir)
    plan = RunPlan.load(run_dir)
    missing = missing_folds(run_dir, plan)
    if missing:
        print(describe_missing(run_dir, plan, missing))
        return None
    predictions = pd.concat([read_fold(run_dir, plan, k) for k in range(plan.n_folds)], ignore_index=True)
    with FileLock(run_dir / ".aggregate.lock"):  # finished folds never change: only the writing is locked
        metrics = _pool(run_dir, plan, predictions)
        audit = audit_run(run_dir)
    print(audit.report())
    if not audit.passed:  # outputs are kept; the failed check is named above and in audit.json
        raise SystemExit(1)
    return metrics


def read_fold(run_dir: Path, plan: RunPlan, k: int) -> pd.DataFrame:
    """Fold `k`'s predictions (``folds/fold_00k.csv``), checked: the runner's columns, rows of fold `k`
    only, no empty cell, labels and predictions among the classes; else one line naming the file."""
    paths = FoldPaths(run_dir, k)
    remedy = (f"delete it and {paths.record.name} beside it, then rerun: {finish_command(run_dir, plan, [k])} "
              "(the fold is predicted again)")
    try:
        table = pd.read_csv(paths.csv, dtype={"subject": str, "sample_id": str})
    except (OSError, ValueError) as err:  # pandas' parser errors and EmptyDataError are ValueErrors
        raise damaged(paths.csv, err, remedy) from None
    problem = fold_table_problem(table, k, plan.class_names)
    if problem:
        raise damaged(paths.csv, problem, remedy)
    return table


def fold_table_problem(table: pd.DataFrame, k: int, class_names: list[str]) -> str | None:
    """What is wrong with fold `k`'s predictions table, in a few words (None: nothing)."""
    probabilities = [f"prob_{name}" for name in class_names]
    missing = [column for column in [*PREDICTION_COLUMNS, *probabilities] if column not in table.columns]
    if missing:
        return f"no column {', '.join(missing)}"
    if table.empty:
        return "no rows"
    if table[[*PREDICTION_COLUMNS, *probabilities]].isna().any().any():
        return "empty cells"
    if not (table["fold"] == k).all():
        return "rows of another fold"
    for column in ("label", "pred"):
        if not pd.api.types.is_integer_dtype(table[column]) or not table[column].between(0, len(class_names) - 1).all():
            return f"{column} values outside the {len(class_names)} classes"
    if not all(pd.api.types.is_numeric_dtype(table[column]) for column in probabilities):
        return "non-numeric probabilities"
    return None


def _pool(run_dir: Path, plan: RunPlan, predictions: pd.DataFrame) -> dict[str, Any]:
    metrics = pooled_metrics(predictions, plan.class_names)
    metrics.update(class_names=plan.class_names, config=plan.config.values, config_hash=plan.config_hash)
    atomic_write_csv(run_dir / "predictions.csv", predictions)
    write_json(run_dir / "metrics.json", metrics)
    plot_confusion_matrix(
        metrics["confusion_matrix"], plan.class_names, run_dir / "confusion_matrix.png",
        f"{run_dir.name}: UF1 {metrics['uf1']:.3f}  UAR {metrics['uar']:.3f}  (n={metrics['n_samples']})",
    )
    if plan.wandb != "disabled":
        _log_pooled_to_wandb(run_dir, plan, metrics)
    print(result_table(metrics))
    print(f"outputs: {run_dir}/predictions.csv, metrics.json, confusion_matrix.png")
    return metrics


POOLED_SCORES = ("uf1", "uar", "acc")


def wandb_summary(metrics: dict[str, Any]) -> dict[str, float]:
    """The pooled scores under their W&B names (the names a sweep's metric uses): ``pooled/<score>`` and
    ``pooled/<database or official test set>/<score>``, for the scores `metrics` holds."""
    scopes = {"pooled": metrics, **{f"pooled/{name}": m for name, m in
                                   {**metrics.get("per_dataset", {}), **(metrics.get("per_test_set") or {})}.items()}}
    return {f"{prefix}/{score}": scope[score] for prefix, scope in scopes.items() for score in POOLED_SCORES
            if score in scope and scope[score] is not None}


def _log_pooled_to_wandb(run_dir: Path, plan: RunPlan, metrics: dict[str, Any]) -> None:
    """The pooled metrics as summary of the run ``pooled_run`` opens (a sweep trial's run under
    ``wandb agent``, where ``pooled/uf1`` is the sweep metric; else the run directory's 'pooled' run)."""
    import wandb  # only where the run logs to W&B (its import takes a while)

    summary = wandb_summary(metrics)
    if pooled_run_holds(plan, run_dir, summary):
        return
    with pooled_run(plan, run_dir, metrics["config"]) as run:
        run.log({**summary, "confusion_matrix": wandb.Image(str(run_dir / "confusion_matrix.png"))})
        run.summary.update(summary)
    remember_pooled(plan, run_dir, summary)


def result_table(metrics: dict[str, Any]) -> str:
    """Pooled UF1/UAR/accuracy overall, per official test set and per database, then per class."""
    lines = [f"LOSO result: pooled predictions of {metrics['n_folds']} folds, {metrics['n_samples']} samples",
             f"{'dataset':<12}{'n':>6}{'UF1':>9}{'UAR':>9}{'Acc':>9}"]
    rows = [("all", metrics), *(metrics.get("per_test_set") or {}).items()]
    if len(metrics["per_dataset"]) > 1:
        rows += list(metrics["per_dataset"].items())
    for name, m in rows:
        lines.append(f"{name:<12}{m['n_samples']:>6}{m['uf1']:>9.4f}{m['uar']:>9.4f}{m['acc']:>9.4f}")
    lines.append(f"{'class':<12}{'n':>6}{'F1':>9}{'recall':>9}")
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<12}{m['support']:>6}{m['f1']:>9.4f}{m['recall']:>9.4f}")
    return "\n".join(lines)
