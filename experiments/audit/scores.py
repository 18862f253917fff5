"""UF1/UAR from counts, written with numpy only, and pooled vs averaged scores of a predictions table.

Independent of ``experiments.metrics`` (torchmetrics) on purpose: the audit recomputes a run's
metrics with a second implementation, and it scores foreign files whose labels are text.

Macro averages follow MEDN eqs. 17-18 (the MEGC convention) over the classes that occur among the
labels or the predictions of the scored samples (a class with tp + fp + fn = 0 is left out; this is
torchmetrics' rule in ``experiments.metrics`` and scikit-learn's default ``labels``). Per class,
F1 = 2tp / (2tp + fp + fn) and recall = tp / (tp + fn), 0 where the denominator is 0.

Per-subject (per-fold) UF1/UAR: the same definition applied to one subject's (fold's) samples
alone, i.e. macro over the classes present in that subject's labels or predictions, as
``sklearn.metrics.f1_score(average="macro")`` called per subject does in the per-subject-averaging
code the audit is meant to expose. Their plain (unweighted) mean over subjects is what such papers
report; the pooled score is computed once on all samples together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd


def confusion(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [true class, predicted class] of integer labels and predictions in 0..n_classes-1."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, preds), 1)
    return matrix


def per_class_scores(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F1 and recall of every class (0 where undefined), and whether the class occurs (tp+fp+fn > 0)."""
    tp = np.diag(matrix).astype(float)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=2 * tp + fp + fn > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
    return f1, recall, tp + fp + fn > 0


def metrics_from_confusion(matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """UF1, UAR, accuracy, per-class scores and the matrix, in the layout of ``classification_metrics``."""
    f1, recall, occurs = per_class_scores(matrix)
    n = int(matrix.sum())
    return {
        "uf1": float(f1[occurs].mean()) if occurs.any() else 0.0,
        "uar": float(recall[occurs].mean()) if occurs.any() else 0.0,
        "acc": float(np.trace(matrix) / n) if n else 0.0,
        "n_samples": n,
        "per_class": {name: {"f1": float(f1[i]), "recall": float(recall[i]), "support": int(matrix[i].sum())}
                      for i, name in enumerate(class_names)},
        "confusion_matrix": matrix.tolist(),
    }


@dataclass(frozen=True)
class Scores:
    uf1: float
    uar: float
    n_samples: int


def macro_scores(labels: np.ndarray, preds: np.ndarray) -> Scores:
    """UF1/UAR of any labels (ints or text) over the classes occurring among `labels` and `preds`."""
    classes, codes = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    matrix = confusion(codes[: len(labels)], codes[len(labels):], len(classes))
    metrics = metrics_from_confusion(matrix, [str(c) for c in classes])
    return Scores(metrics["uf1"], metrics["uar"], len(labels))


@dataclass(frozen=True)
class Averaging:
    """Pooled scores beside the unweighted mean of per-group scores (groups: subject, fold)."""

    pooled: Scores
    groups: dict[str, dict[str, Scores]]  # column -> group value -> scores

    def mean(self, column: str) -> tuple[float, float]:
        scores = list(self.groups[column].values())
        return float(np.mean([s.uf1 for s in scores])), float(np.mean([s.uar for s in scores]))

    def lines(self) -> list[str]:
        """'pooled ... UF1 0.4000 UAR 0.4500' then one line per grouping with its difference to pooled."""
        pooled = self.pooled
        lines = [f"{'pooled over ' + str(pooled.n_samples) + ' samples':<34} UF1 {pooled.uf1:.4f}  UAR {pooled.uar:.4f}"]
        for column, groups in self.groups.items():
            uf1, uar = self.mean(column)
            lines.append(f"{f'mean of {len(groups)} per-{column} scores':<34} UF1 {uf1:.4f}  UAR {uar:.4f}  "
                         f"(minus pooled: UF1 {uf1 - pooled.uf1:+.4f}, UAR {uar - pooled.uar:+.4f})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"pooled": asdict(self.pooled)}
        for column, groups in self.groups.items():
            uf1, uar = self.mean(column)
            result[f"mean_per_{column}"] = {"uf1": uf1, "uar": uar, "uf1_minus_pooled": uf1 - self.pooled.uf1,
                                            "uar_minus_pooled": uar - self.pooled.uar, "n_groups": len(groups)}
            result[f"per_{column}"] = {name: asdict(scores) for name, scores in groups.items()}
        return result


def averaging(table: pd.DataFrame, label: str, pred: str, group_columns: Sequence[str]) -> Averaging:
    """Pooled UF1/UAR of `table` and the per-group scores of each of `group_columns` (in table order)."""
    groups = {column: {str(name): macro_scores(part[label].to_numpy(), part[pred].to_numpy())
                       for name, part in table.groupby(column, sort=False)}
              for column in group_columns}
    return Averaging(macro_scores(table[label].to_numpy(), table[pred].to_numpy()), groups)
