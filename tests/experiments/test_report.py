"""`mer report` on three runs: one real tiny `mer loso` run (seed 0, so metrics.json's format cannot drift),
a copy of it as seed 1 with other scores (OUTPUT/seed_N layout), one with another λ_au inside a sweep's
trials/ (next to an unfinished trial). Expected means and stds are computed here from the files."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.main import mer_main
from tests.conftest import run_in_process

pytestmark = pytest.mark.slow  # every test here reads runs that a module fixture trains

SEED_1 = {"uf1": 0.8125, "uar": 0.625, "acc": 0.75}
OTHER = {"uf1": 0.5, "uar": 0.4375, "acc": 0.5}


def variant(source: Path, target: Path, scores: dict[str, float], **config: float) -> None:
    """A copy of a finished run with other pooled scores and config values (flat top-level or model.init_args)."""
    target.mkdir(parents=True)
    for name in ("config.yaml", "run.json"):
        shutil.copy(source / name, target / name)
    metrics = json.loads((source / "metrics.json").read_text())
    metrics.update(scores)
    for key, value in config.items():
        (metrics["config"] if key == "seed_everything" else metrics["config"]["model"]["init_args"])[key] = value
    (target / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture(scope="module")
def runs(tiny_config, tmp_path_factory):
    """base/seed_0 (real), base/seed_1 (its copy, seed 1), sweep/trials/lam05 (λ_au 0.5), sweep/trials/unfinished."""
    root = tmp_path_factory.mktemp("report")
    real = root / "base" / "seed_0"
    try:
        mer_main(["loso", "--config", str(tiny_config), f"--output={real}", "--wandb=disabled"])
    except SystemExit as exit_:
        assert not exit_.code, f"mer loso failed with exit code {exit_.code}"
    variant(real, root / "base" / "seed_1", SEED_1, seed_everything=1)
    variant(real, root / "sweep" / "trials" / "lam05", OTHER, lambda_au=0.5)
    unfinished = root / "sweep" / "trials" / "unfinished"
    unfinished.mkdir()
    shutil.copy(real / "run.json", unfinished / "run.json")
    return root


def report(runs: Path, capsys, *options: str) -> tuple[str, str]:
    code, out, err = run_in_process(mer_main, ["report", str(runs / "base"), str(runs / "sweep"), *options], capsys)
    assert code == 0, err
    return out, err


def test_seeds_are_averaged_and_the_differing_key_is_a_column(runs, capsys):
    real = json.loads((runs / "base" / "seed_0" / "metrics.json").read_text())
    out, err = report(runs, capsys, "--format", "csv", "--output", str(runs / "table.csv"))
    assert "skipping 1 unfinished run(s)" in err and str(runs / "sweep" / "trials" / "unfinished") in err
    table = pd.read_csv(io.StringIO(out))
    assert pd.read_csv(runs / "table.csv").equals(table)
    assert list(table["lambda_au"]) == [0.5, 1.0] and list(table["n"]) == [1, 2]
    assert "seed_everything" not in table.columns
    assert list(table["run"]) == ["sweep", "base"]  # a trial by its study: its parameters have their columns
    for key in ("uf1", "uar", "acc"):
        pair = np.array([real[key], SEED_1[key]])
        assert table[f"{key}_mean"][1] == pytest.approx(pair.mean())
        assert table[f"{key}_std"][1] == pytest.approx(pair.std(ddof=1))
        assert table[f"{key}_mean"][0] == pytest.approx(OTHER[key]) and np.isnan(table[f"{key}_std"][0])
    assert (runs / "table.confusion.png").stat().st_size > 0


def test_markdown_and_latex_tables(runs, capsys):
    real = json.loads((runs / "base" / "seed_0" / "metrics.json").read_text())
    pair = np.array([real["uf1"], SEED_1["uf1"]])
    out, err = report(runs, capsys, "--by", "lambda_au", "--confusion", str(runs / "side.png"))
    lines = out.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("| ") and line.endswith(" |") for line in lines)
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == ["run", "lambda_au", "n", "UF1", "UAR", "Acc"]
    assert lines[3].split(" | ")[3] == f"{pair.mean():.4f} ± {pair.std(ddof=1):.4f}"
    assert [line.split(" | ")[:2] for line in lines[2:]] == [["| sweep", "0.5"], ["| base", "1.0"]]  # 0.5 and 1.0 alike
    assert (runs / "side.png").stat().st_size > 0 and "side.png" in err
    latex, _ = report(runs, capsys, "--format", "latex", "--confusion", str(runs / "side.png"))
    assert latex.startswith("\\begin{tabular}{llrrrr}\n\\toprule\nrun & lambda\\_au & n & UF1 & UAR & Acc \\\\")
    assert "\\bottomrule" in latex and latex.count("$\\pm$") == 3  # the seed group's three metrics


def test_no_finished_run_is_a_one_line_error(runs, capsys):
    code, _, err = run_in_process(mer_main, ["report", str(runs / "sweep" / "trials" / "unfinished")], capsys)
    assert code == 2 and err.startswith("error: no finished run") and err.count("\n") == 1


def test_a_row_that_would_count_a_seed_twice_is_refused(runs, capsys, tmp_path):
    repeat = tmp_path / "repeat"
    variant(runs / "base" / "seed_0", repeat, SEED_1)  # seed 0's config and seed again
    code, out, err = run_in_process(mer_main, ["report", str(runs / "base"), str(repeat), "--format", "csv",
                                               "--confusion", str(tmp_path / "side.png")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{repeat} repeat another run's config and seeds" in err and "count one seed twice" in err
    assert out == "" and not (tmp_path / "side.png").exists()


def test_chosen_columns_and_metrics(runs, capsys, tmp_path):
    real = json.loads((runs / "base" / "seed_0" / "metrics.json").read_text())
    side = str(tmp_path / "side.png")
    out, _ = report(runs, capsys, "--columns", "model", "--metrics", "uf1,uar", "--confusion", side)
    lines = out.strip().splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == ["run", "model", "n", "UF1", "UAR"]
    assert len(lines) == 4  # still one row per group of runs that differ only in seed (λ_au 0.5 and 1.0)
    rows = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ") for line in lines[2:]}
    assert rows["sweep"][1] == real["config"]["model"]["class_path"].rsplit(".", 1)[-1]
    assert rows["sweep"][3:] == [f"{OTHER['uf1']:.4f}", f"{OTHER['uar']:.4f}"]
    out, _ = report(runs, capsys, "--columns", "none", "--metrics", "uar", "--format", "csv", "--confusion", side)
    table = pd.read_csv(io.StringIO(out))
    assert list(table.columns) == ["run", "n", "uar_mean", "uar_std", "dirs"]
    for options, message in ((["--metrics", "uf1,f1"], "--metrics uf1,f1: give metric names from uf1, uar, acc"),
                             (["--columns", "lamda_au"], "--columns lamda_au: no config key")):
        code, _, err = run_in_process(mer_main, ["report", str(runs / "base"), *options, "--confusion", side], capsys)
        assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1
