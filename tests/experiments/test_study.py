"""`mer study` end to end on a tiny spec: every row x seed trained and measured, the table's mean ±
sample std equal to the replicates' own numbers, the held-out probe on k-fold runs, resuming without
recomputing, and one-line errors for a bad spec."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from experiments.main import mer_main
from tests.conftest import run_in_process

MEASURES = ["scores", "hard_scores", "probe_training", "probe_held_out", "medn_decoupling"]


def write_spec(path: Path, config: Path, **changes) -> Path:
    spec = {"name": "tiny", "title": "tiny study", "seeds": [3, 4], "fresh_data": False,
            "loso_args": ["--trainer.limit_train_batches", "1", "--data.init_args.k_folds", "2",
                          "--threads-per-fold", "1"],
            "rows": [{"name": "MEDN", "configs": [str(config)]},
                     {"name": "no AU loss", "configs": [str(config)], "args": ["--model.init_args.lambda_au", "0"]}],
            "measures": MEASURES, **changes}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_mer_study_end_to_end(tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    spec, output = write_spec(tmp_path / "spec.yaml", tiny_config), tmp_path / "study"
    code, out, err = run_in_process(mer_main, ["study", str(spec), "--output", str(output)], capsys)
    assert code == 0, err
    table = json.loads((output / "table.json").read_text())
    assert [row["name"] for row in table["rows"]] == ["MEDN", "no AU loss"]
    for row, slug in zip(table["rows"], ("medn", "no_au_loss")):
        uf1 = [json.loads((output / slug / f"seed_{s}" / "metrics.json").read_text())["uf1"] for s in (3, 4)]
        metric = row["metrics"]["scores/uf1"]
        assert [metric["values"][str(s)] for s in (3, 4)] == uf1
        assert metric["mean"] == pytest.approx(statistics.mean(uf1)) and metric["std"] == pytest.approx(statistics.stdev(uf1))
        measured = json.loads((output / slug / "seed_3" / "study_measures.json").read_text())
        assert set(measured["measures"]) == set(MEASURES) and measured["seconds"]["loso"] > 0
        held_out = measured["measures"]["probe_held_out"]
        assert held_out["chance"] == pytest.approx(1 / 2)  # 4 subjects, 2 folds: each probe tells 2 test subjects apart
        decoupling = measured["measures"]["medn_decoupling"]
        assert 0 <= decoupling["mean_abs_cosine"] <= 1 and 0 <= decoupling["cross_correlation"] <= 1
    run_config = yaml.safe_load((output / "no_au_loss" / "seed_4" / "config.yaml").read_text())
    assert run_config["model"]["init_args"]["lambda_au"] == 0 and run_config["seed_everything"] == 4
    assert "| scores/uf1 |" in (output / "table.md").read_text() and "| scores/uf1 |" in out
    assert len((output / "commands.txt").read_text().splitlines()) == 4

    # the held-out probe of one replicate: every fold's probed subjects are its test subjects
    run = output / "medn" / "seed_3"
    code, _, err = run_in_process(mer_main, ["probe", str(run), "--subjects", "held_out"], capsys)
    assert code == 0, err
    probe = json.loads((run / "probe_held_out.json").read_text())
    plan = json.loads((run / "run.json").read_text())
    assert probe["subjects"] == "held_out"
    for fold in probe["per_fold"]:
        assert sorted(fold["probed_subjects"]) == sorted(plan["test_subjects"][str(fold["fold"])])
    assert probe["features"]["motion"]["pooled"]["balanced_accuracy"] == pytest.approx(held_out_of(run, "motion"))

    # resuming: finished folds and measures are reused, nothing is measured again
    def fail(*_args):
        raise AssertionError("a finished measure was computed again")

    monkeypatch.setattr("experiments.studies.measures.measure", fail)
    code, _, err = run_in_process(mer_main, ["study", str(spec), "--output", str(output)], capsys)
    assert code == 0, err
    assert json.loads((output / "table.json").read_text())["rows"][0]["metrics"]["scores/uf1"]["mean"] == pytest.approx(
        table["rows"][0]["metrics"]["scores/uf1"]["mean"])


def held_out_of(run: Path, feature: str) -> float:
    return json.loads((run / "study_measures.json").read_text())["measures"]["probe_held_out"][feature]


@pytest.mark.parametrize("change, message", [
    ({"measures": ["scores", "vibes"]}, "unknown measures ['vibes']"),
    ({"seeds": [1, 1]}, "seeds must be distinct"),
    ({"rows": [{"name": "a", "configs": ["x.yaml"]}, {"name": "A", "configs": ["x.yaml"]}]}, "distinct folder names"),
])
def test_bad_specs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, message: str) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tmp_path / "x.yaml", **change)
    code, _, err = run_in_process(mer_main, ["study", str(spec), "--output", str(tmp_path / "out")], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0] and str(spec) in lines[0]


def test_seeds_outside_the_spec_are_a_one_line_error(tiny_config: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_config)
    code, _, err = run_in_process(mer_main, ["study", str(spec), "--output", str(tmp_path / "out"), "--seeds", "3,9"], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "[9] not among the spec's seeds [3, 4]" in lines[0]
    assert not (tmp_path / "out" / "medn").exists()  # checked before anything ran


SPECS = sorted((Path(__file__).resolve().parents[2] / "configs" / "studies").glob("*/study.yaml"))


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.parent.name)
def test_every_shipped_study_row_parses_with_its_overrides(spec_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Each row's configs + args resolve to one LightningCLI config whose overrides took effect (the
    ablation rows are reachable from config), with the study's data settings."""
    from experiments.lightning_cli import make_cli
    from experiments.studies.spec import load_spec

    monkeypatch.chdir(spec_path.parents[3])  # the specs name configs relative to the repository root
    spec = load_spec(spec_path)
    assert len(spec.seeds) >= 3 and spec.fresh_data
    for row in spec.rows:
        configs = [arg for config in row.configs for arg in ("--config", config)]
        with pytest.raises(SystemExit) as exit_info:
            make_cli(["fit", *configs, *row.args, "--print_config"])
        assert exit_info.value.code in (0, None)
        printed = yaml.safe_load(capsys.readouterr().out)
        overlay = yaml.safe_load(Path(row.configs[-1]).read_text())
        for key, value in overlay["data"]["init_args"].items():
            assert printed["data"]["init_args"][key] == value, key
        for name, value in zip(row.args[::2], row.args[1::2]):
            assert printed["model"]["init_args"][name.rsplit(".", 1)[-1]] == yaml.safe_load(value), name
