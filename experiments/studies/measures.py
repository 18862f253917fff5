"""The measures of a study on one finished run directory (one row, one replicate seed): name -> numbers.

- ``scores``: pooled UF1 / UAR of the run (metrics.json: once over all folds' predictions).
- ``hard_scores``: UF1 / UAR pooled over the "hard" samples only (clips whose AU set occurs under two
  3-class labels; the synthetic table's ``hard`` column; MEDN Table II's hard samples).
- ``probe_training`` / ``probe_held_out``: ``mer probe``'s pooled balanced accuracy per feature, on
  each fold's training subjects or on its held-out subjects (folds of >= 2 test subjects), and chance.
- ``medn_decoupling``: on each fold's held-out subjects, MEDN's mean |α| between f_m and f_e (eqs. 5-6),
  their mean squared cross-correlation (both averaged over folds), the AU head's macro AUC (pooled over
  folds) and a linear AU probe's macro AUC on f_m (fitted on the fold's training samples).
- ``mine_judge``: Xie et al.'s I(f^e; f^d) by a fresh MINE fitted on half of each subject's samples
  (all subjects of the fold) and scored on the other half (``judges.mine_judge``), averaged over folds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic_files import read_json
from ..metrics import classification_metrics
from ..probe.extract import BUILD_ONLY, FoldFeatures, fold_features
from ..probe.linear import split_per_subject
from ..probe.probe_run import probe_run
from ..runner.jobs.fold_job import fold_config
from ..runner.run_plan import RunPlan, instantiate
from .judges import au_probe_scores, macro_auc, mean_abs_cosine, mean_squared_cross_correlation, mine_judge

PROBE_SEED = 0  # the probe's per-subject split seed (mer probe's default)


def measure(name: str, run_dir: Path) -> dict[str, float]:
    """The numbers of measure `name` on the finished run in `run_dir`."""
    plan = RunPlan.load(run_dir)
    if name == "scores":
        metrics = read_json(run_dir / "metrics.json", f"pool the run again: mer loso --aggregate-only {run_dir}",
                            keys=("uf1", "uar"))
        return {"uf1": metrics["uf1"], "uar": metrics["uar"]}
    if name == "hard_scores":
        return hard_scores(plan, run_dir)
    if name in ("probe_training", "probe_held_out"):
        result = probe_run(plan, run_dir, None, "cpu", PROBE_SEED, name.removeprefix("probe_"))
        pooled = {feature: values["pooled"] for feature, values in result["features"].items()}
        return {**{feature: p["balanced_accuracy"] for feature, p in pooled.items()},
                "chance": next(iter(pooled.values()))["chance"]}
    if name == "medn_decoupling":
        return medn_decoupling(plan, run_dir)
    if name == "mine_judge":
        return {"mi_nats": float(np.mean([fold_mine_judge(plan, run_dir, k) for k in range(plan.n_folds)]))}
    raise ValueError(f"unknown measure {name}")


def hard_scores(plan: RunPlan, run_dir: Path) -> dict[str, float]:
    """UF1 / UAR of the pooled predictions of the samples the data table marks ``hard``."""
    datamodule = instantiate(fold_config(plan, run_dir, 0).with_trainer(**BUILD_ONLY)).datamodule
    datamodule.prepare_data()
    hard = set(datamodule.table.loc[datamodule.table["hard"].astype(bool), "sample_id"])
    predictions = pd.read_csv(run_dir / "predictions.csv", dtype={"sample_id": str})
    subset = predictions[predictions["sample_id"].isin(hard)]
    if subset.empty:
        return {"uf1": float("nan"), "uar": float("nan"), "n_samples": 0.0}
    metrics = classification_metrics(subset["label"], subset["pred"], plan.class_names)
    return {"uf1": metrics["uf1"], "uar": metrics["uar"], "n_samples": float(len(subset))}


def medn_read(model, batch):
    """MEDN's f_m, f_e and its AU head's logits."""
    out = model(batch)
    return {"motion": out["f_m"], "emotion": out["f_e"], "au_logits": out["au_logits"]}


def medn_decoupling(plan: RunPlan, run_dir: Path) -> dict[str, float]:
    cosines, correlations, au_true, au_head, au_probe = [], [], [], [], []
    for k in range(plan.n_folds):
        train = fold_features(plan, run_dir, k, "cpu", "training", keep=("au",), read=medn_read)
        test = fold_features(plan, run_dir, k, "cpu", "held_out", keep=("au",), read=medn_read)
        motion, emotion = test.features["motion"], test.features["emotion"]
        cosines.append(mean_abs_cosine(motion, emotion))
        correlations.append(mean_squared_cross_correlation(motion, emotion))
        au_true.append(test.inputs["au"])
        au_head.append(test.features["au_logits"])
        au_probe.append(au_probe_scores(train.features["motion"], train.inputs["au"], motion))
    true = np.concatenate(au_true)
    return {"mean_abs_cosine": float(np.mean(cosines)),
            "cross_correlation": float(np.mean(correlations)),
            "au_head_auc": macro_auc(true, np.concatenate(au_head)) if au_head[0].shape[1] else float("nan"),
            "au_probe_auc": macro_auc(true, np.concatenate(au_probe))}


def fold_mine_judge(plan: RunPlan, run_dir: Path, k: int) -> float:
    """The fresh MINE on fold k's model's (f^e, f^d) of all its samples (training and held-out subjects),
    fitted on half of every subject's samples and scored on the other half (``split_per_subject``).
    Fitting on the training subjects and scoring on the held-out ones does not work: the features
    cluster by subject, so pairs of unseen subjects lie where the judge never looked (it scored
    -6 nats on the first replicate)."""
    parts: list[FoldFeatures] = [fold_features(plan, run_dir, k, "cpu", part) for part in ("training", "held_out")]
    if "f_d" not in parts[0].features:
        raise ValueError(f"{run_dir}: the model has no IDNet features (f_d) for the MINE judge (use_idnet_mine: true)")
    f_e, f_d = (np.concatenate([p.features[name] for p in parts]) for name in ("f_e", "f_d"))
    split = split_per_subject(np.concatenate([p.subjects for p in parts]), seed=[PROBE_SEED, k])
    return mine_judge(f_e[split.fit], f_d[split.fit], f_e[split.heldout], f_d[split.heldout], seed=k)
