"""`mer loso --seeds 0,1`: one ordinary run directory per seed (seed_everything = N, the same folds) and
a mean ± std summary of the pooled scores, recomputed here from each seed's predictions; a rerun resumes;
bad seed lists are one-line errors that create nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.main import mer_main
from experiments.runner.executors.worker import worker_main
from tests.conftest import run_in_process
from tests.runner.test_loso_run import macro_scores

TWO_FOLDS = ["--data.init_args.k_folds", "2", "--wandb", "disabled", "--threads-per-fold", "1"]


def pooled_scores(predictions: pd.DataFrame) -> dict[str, float]:
    """UF1 / UAR / accuracy of one seed's pooled predictions, computed independently of the project's metrics."""
    labels, preds = predictions["label"].to_numpy(), predictions["pred"].to_numpy()
    uf1, uar = macro_scores(labels, preds, 3)
    return {"uf1": uf1, "uar": uar, "acc": float(np.mean(labels == preds))}


@pytest.mark.slow
def test_two_seeds_give_two_runs_and_their_mean_and_std(tiny_config: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "seeds"
    argv = ["loso", "--config", str(tiny_config), "--output", str(output), "--seeds", "0,1", *TWO_FOLDS]
    code, out, err = run_in_process(mer_main, argv, capsys)
    assert code == 0, err
    runs = {seed: output / f"seed_{seed}" for seed in (0, 1)}
    scores = {}
    for seed, run in runs.items():
        assert json.loads((run / "run.json").read_text())["base_seed"] == seed
        assert (run / "config.yaml").read_text().count(f"seed_everything: {seed}") == 1
        scores[seed] = pooled_scores(pd.read_csv(run / "predictions.csv"))
    plans = [json.loads((run / "fold_plan.json").read_text()) for run in runs.values()]
    assert plans[0] == plans[1] and len(plans[0]["folds"]) == 2  # every seed tests the same folds
    predictions = [pd.read_csv(run / "predictions.csv") for run in runs.values()]
    assert not np.allclose(predictions[0]["prob_negative"], predictions[1]["prob_negative"])  # the seed matters

    summary = json.loads((output / "seeds_summary.json").read_text())
    assert summary["seeds"] == [0, 1] and (output / "seeds_summary.png").stat().st_size > 0
    for score in ("uf1", "uar", "acc"):
        values = [scores[0][score], scores[1][score]]
        entry = summary["pooled"][score]
        assert entry["per_seed"] == pytest.approx(values, abs=1e-6)
        assert entry["mean"] == pytest.approx((values[0] + values[1]) / 2, abs=1e-6)
        assert entry["std"] == pytest.approx(abs(values[0] - values[1]) / np.sqrt(2), abs=1e-6)  # ddof 1 of two values
    uf1 = summary["pooled"]["uf1"]
    assert f"{uf1['mean']:.4f} ± {uf1['std']:.4f}" in out

    stamps = {path: path.stat().st_mtime_ns for path in output.glob("seed_*/folds/fold_*.csv")}
    code, out, err = run_in_process(mer_main, argv, capsys)  # a rerun resumes: no fold trains again
    assert code == 0, err
    assert len(stamps) == 4 and {path: path.stat().st_mtime_ns for path in stamps} == stamps
    assert json.loads((output / "seeds_summary.json").read_text())["pooled"] == summary["pooled"]

    (output / "seeds_summary.json").unlink()  # what the SLURM summary job runs: pools every seed again
    worker_main([str(output), "--aggregate"])
    assert json.loads((output / "seeds_summary.json").read_text())["pooled"] == summary["pooled"]


@pytest.mark.parametrize(("spec", "message"), [
    ("0,a", "--seeds '0,a' is not a list of seeds like '0,1,2' or '0-4'"),
    ("2-1", "--seeds '2-1': range 2-1 is empty (write it as 1-2)"),
    ("4294967296", "--seeds '4294967296': seed 4294967296 is too large (seeds are 0..4294967295)"),
    ("4294967294", "seed_everything 4294967294: fold 3 would train with seed 4294967297, above 4294967295 "
                   "(Lightning's range); use a seed <= 4294967292"),
])
def test_a_bad_seed_list_is_one_line_and_creates_nothing(spec: str, message: str, tiny_config: Path, tmp_path: Path,
                                                         capsys) -> None:
    output = tmp_path / "bad"
    code, _, err = run_in_process(mer_main, ["loso", "--config", str(tiny_config), "--output", str(output),
                                             "--seeds", spec], capsys)
    lines = [line for line in err.splitlines() if line.strip() and "clips: render" not in line]  # a cold cache's bar
    assert code == 2 and lines == [f"error: {message}"] and not output.exists()
