"""UF1/UAR against hand computations; pooled is not the mean of per-fold scores."""

import pandas as pd
import pytest

from experiments.metrics import classification_metrics, pooled_metrics

CLASSES = ("negative", "positive", "surprise")


def test_uf1_uar_match_hand_computation():
    labels = [0, 0, 0, 1, 1, 2]
    preds = [0, 0, 1, 1, 2, 2]
    # class 0: TP 2, FP 0, FN 1 -> F1 4/5, recall 2/3
    # class 1: TP 1, FP 1, FN 1 -> F1 2/4, recall 1/2
    # class 2: TP 1, FP 1, FN 0 -> F1 2/3, recall 1
    m = classification_metrics(labels, preds, CLASSES)
    assert m["uf1"] == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    assert m["uar"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["per_class"]["positive"]["support"] == 2


def test_pooled_differs_from_mean_of_folds_and_splits_by_dataset():
    frame = pd.DataFrame({
        "fold": [0, 0, 1, 1, 1, 1],
        "dataset": ["a", "a", "b", "b", "b", "b"],
        "label": [0, 1, 0, 0, 2, 2],
        "pred": [0, 0, 0, 2, 2, 2],
    })
    pooled = pooled_metrics(frame, CLASSES)
    per_fold = [classification_metrics(g["label"], g["pred"], CLASSES)["uf1"] for _, g in frame.groupby("fold")]
    assert pooled["uf1"] != pytest.approx(sum(per_fold) / len(per_fold))
    assert pooled["n_folds"] == 2
    assert set(pooled["per_dataset"]) == {"a", "b"}
    # dataset b has no positive sample nor prediction: macro mean over its present classes only
    b = pooled["per_dataset"]["b"]
    assert b["uar"] == pytest.approx((1 / 2 + 1) / 2)
