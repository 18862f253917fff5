"""The probe over a run's finished folds: features per fold, one linear probe per feature and fold, pooled."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from datamodules.errors import MERError

from ..runner.fold_selection import parse_folds
from ..runner.paths import FoldPaths
from ..runner.run_plan import RunPlan
from .extract import fold_features, weights_file
from .linear import C, FoldProbe, pool_folds, probe_fold, split_per_subject
from .output import POOLING


def probe_run(plan: RunPlan, run_dir: Path, folds: str | None, device: str, seed: int) -> dict[str, Any]:
    """probe.json's contents for the finished folds among `folds` ('0-3,7'; None = all)."""
    selected = parse_folds(folds, plan.n_folds)
    finished = [k for k in selected if FoldPaths(run_dir, k).done()]
    if not finished:
        raise MERError(f"{run_dir} has no finished fold{' among --folds ' + folds if folds else ''}; "
                       "finish some with `mer loso` first")
    notes = [f"{plan.fold_name(k)} is not finished: not probed" for k in selected if k not in finished]
    probes, dims, per_fold = probe_folds(plan, run_dir, finished, device, seed, notes)
    if not probes:
        raise MERError(f"{run_dir}: no finished fold has 2 training subjects with 2 samples each to probe")
    notes += [f"feature {name}, fold {p.fold}: the logistic regression did not converge"
              for name, results in probes.items() for p in results if not p.converged]
    return {
        "run_dir": str(run_dir.resolve()),
        "model": (plan.config.model_class_path or "?").rsplit(".", 1)[-1],
        "config_hash": plan.config_hash,
        "folds": sorted({p.fold for results in probes.values() for p in results}),
        "method": "per fold: each training subject's samples split ceil(n/2) fit / rest held out "
                  f"(seed [{seed}, fold]); logistic regression (L2, C={C}) on features standardised on the "
                  "fit part predicts the subject; balanced accuracy on the held-out part",
        "pooling": POOLING,
        "features": {name: {"dim": dims[name], "pooled": pool_folds(results),
                            "per_fold": [p.summary() for p in results]} for name, results in probes.items()},
        "per_fold": per_fold,
        "notes": notes,
    }


def probe_folds(plan: RunPlan, run_dir: Path, folds: list[int], device: str, seed: int,
                notes: list[str]) -> tuple[dict[str, list[FoldProbe]], dict[str, int], list[dict[str, Any]]]:
    """Per feature its fold probes, per feature its dimension, per fold who was probed; `notes` gets
    what was skipped and why."""
    from tqdm import tqdm

    probes: dict[str, list[FoldProbe]] = {}
    dims: dict[str, int] = {}
    per_fold: list[dict[str, Any]] = []
    for k in tqdm(folds, desc="probe", unit="fold", file=sys.stderr):
        weights = weights_file(run_dir, k)[0]
        if not weights.is_file():
            notes.append(f"{plan.fold_name(k)}: its weights {weights} are missing: not probed")
            continue
        data = fold_features(plan, run_dir, k, device)
        split = split_per_subject(data.subjects, seed=[seed, k])
        notes += [f"{plan.fold_name(k)}: subject {s} has < 2 training samples: not probed" for s in split.skipped]
        per_fold.append({"fold": k, "test_subjects": plan.test_subjects[k], "probed_subjects": split.subjects,
                         "skipped_subjects": split.skipped, "n_fit": len(split.fit), "n_heldout": len(split.heldout)})
        if len(split.subjects) < 2:
            notes.append(f"{plan.fold_name(k)}: fewer than 2 subjects with >= 2 samples: not probed")
            continue
        for name, features in data.features.items():
            probes.setdefault(name, []).append(probe_fold(k, features, data.subjects, split))
            dims[name] = features.shape[1]
    return probes, dims, per_fold
