"""`mer loso` end to end on a tiny synthetic set: outputs, pooled metrics, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from datamodules.errors import MERError
from experiments.loso import run_loso

ROOT = Path(__file__).resolve().parents[1]


def macro_scores(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> tuple[float, float]:
    """UF1/UAR written out independently of the project's metrics code (MEDN eqs. 17-18)."""
    f1s, recalls = [], []
    for c in range(n_classes):
        tp = np.sum((preds == c) & (labels == c))
        fp = np.sum((preds == c) & (labels != c))
        fn = np.sum((preds != c) & (labels == c))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
        recalls.append(tp / (tp + fn) if tp + fn else 0.0)
    return float(np.mean(f1s)), float(np.mean(recalls))


@pytest.fixture(scope="module")
def finished_run(tiny_config, tmp_path_factory):
    output = tmp_path_factory.mktemp("loso") / "run"
    metrics = run_loso(["--config", str(tiny_config)], output, wandb_mode="offline")
    return output, metrics


def test_outputs_and_pooled_metrics(finished_run):
    output, metrics = finished_run
    for name in ("predictions.csv", "metrics.json", "confusion_matrix.png", "config.yaml"):
        assert (output / name).is_file(), name
    predictions = pd.read_csv(output / "predictions.csv")
    assert list(predictions.columns[:6]) == ["sample_id", "subject", "dataset", "fold", "label", "pred"]
    prob_columns = [c for c in predictions.columns if c.startswith("prob_")]
    assert prob_columns == ["prob_negative", "prob_positive", "prob_surprise"]
    np.testing.assert_allclose(predictions[prob_columns].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(predictions[prob_columns].to_numpy().argmax(1), predictions["pred"])

    saved = json.loads((output / "metrics.json").read_text())
    uf1, uar = macro_scores(predictions["label"].to_numpy(), predictions["pred"].to_numpy(), 3)
    assert saved["uf1"] == pytest.approx(uf1, abs=1e-6)
    assert saved["uar"] == pytest.approx(uar, abs=1e-6)
    assert saved["acc"] == pytest.approx((predictions["label"] == predictions["pred"]).mean(), abs=1e-6)
    assert saved["n_samples"] == len(predictions) > 0
    assert saved["n_folds"] == 4 and set(saved["per_dataset"]) == {"synthetic"}
    assert np.sum(saved["confusion_matrix"]) == len(predictions)
    assert saved["config"]["model"]["class_path"].endswith("MEDN") and len(saved["config_hash"]) == 12
    assert metrics["uf1"] == saved["uf1"]


def test_every_subject_is_tested_in_exactly_one_fold(finished_run, tiny_config):
    output, _ = finished_run
    predictions = pd.read_csv(output / "predictions.csv")
    assert predictions["sample_id"].is_unique
    cache_index = next(Path(yaml.safe_load(tiny_config.read_text())["data"]["init_args"]["cache_dir"]).glob("synthetic-*/index.csv"))
    assert sorted(predictions["sample_id"]) == sorted(pd.read_csv(cache_index)["sample_id"])
    folds_per_subject = predictions.groupby("subject")["fold"].nunique()
    assert (folds_per_subject == 1).all() and len(folds_per_subject) == 4
    assert predictions.groupby("fold")["subject"].nunique().eq(1).all()


def test_wandb_offline_runs_one_per_fold_plus_pooled(finished_run):
    output, _ = finished_run
    runs = sorted((output / "wandb").glob("offline-run-*"))
    assert len(runs) == 5  # 4 folds + pooled


def test_rerun_skips_finished_folds_and_reproduces_metrics(finished_run, tiny_config):
    output, metrics = finished_run
    stamps = {p: p.stat().st_mtime_ns for p in (output / "folds").glob("fold_*.csv")}
    again = run_loso(["--config", str(tiny_config)], output, wandb_mode="disabled")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["uf1"] == metrics["uf1"] and again["uar"] == metrics["uar"]


def test_other_config_into_same_output_is_refused(finished_run, tiny_config):
    output, _ = finished_run
    with pytest.raises(MERError, match="another config"):
        run_loso(["--config", str(tiny_config), "--model.init_args.lambda_orth", "0.5"], output, wandb_mode="disabled")


def test_killed_run_resumes_to_identical_metrics(finished_run, tiny_config, tmp_path):
    _, reference = finished_run
    output = tmp_path / "killed"
    command = [sys.executable, "-c", "from experiments.cli import mer_main; mer_main()", "loso", "--config",
               str(tiny_config), "--output", str(output), "--wandb", "disabled"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 240
    while not (output / "folds" / "fold_000.csv").exists():
        assert process.poll() is None, "mer loso ended before its first fold finished"
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # mid-run: fold 1 is training
    process.wait()
    assert not (output / "metrics.json").exists()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    resumed = json.loads((output / "metrics.json").read_text())
    assert resumed["uf1"] == reference["uf1"] and resumed["uar"] == reference["uar"]
    assert resumed["confusion_matrix"] == reference["confusion_matrix"]
