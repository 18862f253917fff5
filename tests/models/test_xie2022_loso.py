"""Xie et al. 2022 end to end through `mer loso`: LOSO and subject-independent k-fold (our reading of
the paper's "five-fold cross-validation").

configs/xie2022/synthetic.yaml as shipped, shrunk on the command line (fewer clips, shorter
stages) so both runs fit the test budget; the runner, outputs and metrics are the ones of every run.
"""

from __future__ import annotations

from pathlib import Path

import json

import pandas as pd
import pytest

from experiments.main import mer_main
from tests.conftest import run_in_process

ROOT = Path(__file__).resolve().parents[2]
SHRINK = ["--data.init_args.n_subjects", "6", "--data.init_args.clips_per_subject", "3",
          "--model.init_args.stage_steps", "[1, 2, 1, 2]", "--wandb", "disabled"]


@pytest.fixture(scope="module")
def xie_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xie_cache")


def loso(xie_cache: Path, output: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[pd.DataFrame, dict]:
    code, out, err = run_in_process(mer_main, ["loso", "--config", str(ROOT / "configs/xie2022/synthetic.yaml"), *SHRINK,
                                               "--data.init_args.cache_dir", str(xie_cache), "--output", str(output), *extra],
                                    capsys)
    assert code == 0, err[-3000:]
    assert "UF1" in out
    predictions = pd.read_csv(output / "predictions.csv", dtype={"subject": str, "sample_id": str})
    return predictions, json.loads((output / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(("extra", "n_folds"), [((), 6), (("--data.init_args.k_folds", "5"), 5)], ids=["loso", "5-fold"])
def test_mer_loso_runs_xie2022(xie_cache, tmp_path, capsys, extra, n_folds):
    predictions, metrics = loso(xie_cache, tmp_path / "run", capsys, *extra)
    assert metrics["n_folds"] == n_folds == predictions["fold"].nunique()
    assert metrics["n_samples"] == len(predictions) > 6 * 2
    assert predictions["sample_id"].is_unique  # every sample tested exactly once
    folds_of_subject = predictions.groupby("subject")["fold"].nunique()
    assert len(folds_of_subject) == 6 and (folds_of_subject == 1).all()  # a subject's samples in one fold
    assert {"uf1", "uar", "acc"} <= metrics.keys()  # accuracy next to UF1/UAR (Table 6 reports accuracy)
    assert metrics["acc"] == pytest.approx((predictions["label"] == predictions["pred"]).mean())
