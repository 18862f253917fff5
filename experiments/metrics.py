"""UF1 / UAR / accuracy on pooled LOSO predictions (MEDN eqs. 17-18, MEGC convention).

Computed ONCE on the predictions of all folds together, never as a mean of per-fold scores.
Classes absent from both labels and predictions of a subset are left out of the macro mean
(torchmetrics' behaviour), which is what per-database scores of a composite set need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_recall,
)


def classification_metrics(labels: Sequence[int], preds: Sequence[int], class_names: Sequence[str]) -> dict[str, Any]:
    """UF1 (macro F1), UAR (macro recall), accuracy, per-class scores and the confusion matrix."""
    target = torch.tensor(np.asarray(labels), dtype=torch.long)
    pred = torch.tensor(np.asarray(preds), dtype=torch.long)
    n = len(class_names)
    f1 = multiclass_f1_score(pred, target, n, average=None)
    recall = multiclass_recall(pred, target, n, average=None)
    support = torch.bincount(target, minlength=n)
    return {
        "uf1": multiclass_f1_score(pred, target, n, average="macro").item(),
        "uar": multiclass_recall(pred, target, n, average="macro").item(),
        "acc": multiclass_accuracy(pred, target, n, average="micro").item(),
        "n_samples": len(target),
        "per_class": {
            name: {"f1": f1[i].item(), "recall": recall[i].item(), "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": multiclass_confusion_matrix(pred, target, n).tolist(),
    }


def pooled_metrics(predictions: pd.DataFrame, class_names: Sequence[str]) -> dict[str, Any]:
    """Overall metrics plus the same per source database ('dataset' column) and, under an official
    split (a 'test_set' column: e.g. DFME's testA, testB), per test set; overall = all test sets together."""
    result = classification_metrics(predictions["label"], predictions["pred"], class_names)
    result["n_folds"] = int(predictions["fold"].nunique())
    for key, column in (("per_dataset", "dataset"), ("per_test_set", "test_set")):
        if column in predictions.columns:
            result[key] = {name: classification_metrics(group["label"], group["pred"], class_names)
                           for name, group in predictions.groupby(column, sort=True)}
    return result


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN below two values); NaN, NaN without values."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
    return mean, std
