"""The probe over a run's finished folds: features per fold, one linear probe per feature and fold, pooled."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from datamodules.errors import MERError

from ..runner.fold_selection import parse_folds
from ..runner.paths import FoldPaths
from ..runner.run_plan import RunPlan
from .extract import Part, fold_features, weights_file
from .linear import C, FoldProbe, pool_folds, probe_fold, split_per_subject
from .output import POOLING


def probe_run(plan: RunPlan, run_dir: Path, folds: str | None, device: str, seed: int,
              part: Part = "training") -> dict[str, Any]:
    """probe.json's contents for the finished folds among `folds` ('0-3,7'; None = all), probing the
    subjects of `part` ('training': each fold's training subjects; 'held_out': its test subjects)."""
    selected = parse_folds(folds, plan.n_folds)
    finished = [k for k in selected if FoldPaths(run_dir, k).done()]
    if not finished:
        raise MERError(f"{run_dir} has no finished fold{' among --folds ' + folds if folds else ''}; "
                       "finish some with `mer loso` first")
    notes = [f"{plan.fold_name(k)} is not finished: not probed" for k in selected if k not in finished]
    probes, dims, per_fold = probe_folds(plan, run_dir, finished, device, seed, notes, part)
    if not probes:
        hint = ("; a held-out probe needs folds that hold out >= 2 subjects (e.g. --data.init_args.k_folds, "
                "not LOSO)" if part == "held_out" else "")
        raise MERError(f"{run_dir}: no finished fold has 2 {SUBJECTS[part]} with 2 samples each to probe{hint}")
    notes += [f"feature {name}, fold {p.fold}: the logistic regression did not converge"
              for name, results in probes.items() for p in results if not p.converged]
    return {
        "run_dir": str(run_dir.resolve()),
        "model": (plan.config.model_class_path or "?").rsplit(".", 1)[-1],
        "config_hash": plan.config_hash,
        "folds": sorted({p.fold for results in probes.values() for p in results}),
        "subjects": part,
        "method": f"per fold: each of its {SUBJECTS[part]}' samples split ceil(n/2) fit / rest held out "
                  f"(seed [{seed}, fold]); logistic regression (L2, C={C}) on features standardised on the "
                  "fit part predicts the subject; balanced accuracy on the held-out part",
        "pooling": POOLING,
        "features": {name: {"dim": dims[name], "pooled": pool_folds(results),
                            "per_fold": [p.summary() for p in results]} for name, results in probes.items()},
        "per_fold": per_fold,
        "notes": notes,
    }


SUBJECTS = {"training": "training subjects", "held_out": "held-out (test) subjects"}


def probe_folds(plan: RunPlan, run_dir: Path, folds: list[int], device: str, seed: int, notes: list[str],
                part: Part = "training") -> tuple[dict[str, list[FoldProbe]], dict[str, int], list[dict[str, Any]]]:
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
        data = fold_features(plan, run_dir, k, device, part)
        split = split_per_subject(data.subjects, seed=[seed, k])
        notes += [f"{plan.fold_name(k)}: subject {s} has < 2 samples: not probed" for s in split.skipped]
        per_fold.append({"fold": k, "test_subjects": plan.test_subjects[k], "probed_subjects": split.subjects,
                         "skipped_subjects": split.skipped, "n_fit": len(split.fit), "n_heldout": len(split.heldout)})
        if len(split.subjects) < 2:
            notes.append(f"{plan.fold_name(k)}: fewer than 2 subjects with >= 2 samples: not probed")
            continue
        for name, features in data.features.items():
            probes.setdefault(name, []).append(probe_fold(k, features, data.subjects, split))
            dims[name] = features.shape[1]
    return probes, dims, per_fold
