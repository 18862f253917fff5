"""Every file the runner, `mer sweep` and `mer study` read back: a damaged one (cut short, garbage, a
missing column or key) is one `error:` line naming the file and what to do, exit code 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from datamodules.errors import MERError
from experiments.audit.checks import audit_run
from experiments.main import mer_main
from experiments.probe.extract import load_weights
from experiments.runner.jobs.fold_group_job import started_groups
from experiments.runner.planning import _check_same_fold_plan
from experiments.runner.run_plan import FOLD_PLAN, RunConfig, RunPlan, check_fold_plan
from experiments.studies import read_record
from experiments.sweep.setup import check_output
from experiments.sweep.spec import load_spec
from experiments.sweep.study import SweepSettings, open_study, read_pooled
from experiments.sweep.summary import trial_scores
from tests.conftest import run_in_process

CLASSES = ["negative", "positive"]


def planned_run(run_dir: Path) -> RunPlan:
    """A planned run of two finished folds (files as the runner writes them; no training)."""
    plan = RunPlan(config_hash="0123456789ab", n_folds=2, folds=[0, 1], test_subjects={0: ["s0"], 1: ["s1"]},
                   class_names=CLASSES, base_seed=0, threads_per_fold=1, wandb="disabled", group="run-0123456789ab",
                   config=RunConfig({"seed_everything": 0, "trainer": {"max_epochs": 1}}))
    (run_dir / "folds").mkdir(parents=True)
    plan.save(run_dir, yaml.safe_dump(plan.config.values))
    (run_dir / FOLD_PLAN).write_text(json.dumps({"kind": "loso", "folds": [{"fold": 0}, {"fold": 1}]}))
    for k in (0, 1):
        pd.DataFrame({"sample_id": [f"{k}a", f"{k}b"], "subject": f"s{k}", "dataset": "synthetic", "fold": k,
                      "label": [0, 1], "pred": [0, 0], "prob_negative": [0.7, 0.6], "prob_positive": [0.3, 0.4]}
                     ).to_csv(run_dir / "folds" / f"fold_{k:03d}.csv", index=False)
        (run_dir / "folds" / f"fold_{k:03d}.json").write_text(json.dumps({"fold": k, "weights": "last_epoch"}))
    return plan


def aggregate_only(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """`mer loso --aggregate-only RUN_DIR`: must fail with one error line (returned) and write nothing."""
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    code, out, err = run_in_process(mer_main, ["loso", "--aggregate-only", str(run_dir)], capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
    return err.strip()


RUN_JSON_DAMAGE = {
    "cut short": lambda text: text[: len(text) // 2],
    "not an object": lambda text: "[1, 2]",
    "a key missing": lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "n_folds"}),
    "a value of another type": lambda text: json.dumps({**json.loads(text), "folds": "0-1"}),
    "an unknown key": lambda text: json.dumps({**json.loads(text), "surprise": 1}),
}


@pytest.mark.parametrize("damage", RUN_JSON_DAMAGE)
def test_damaged_run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    run_dir = tmp_path / "run"
    planned_run(run_dir)
    run_json = run_dir / "run.json"
    run_json.write_text(RUN_JSON_DAMAGE[damage](run_json.read_text()))
    err = aggregate_only(run_dir, capsys)
    assert err.startswith(f"error: {run_json} is damaged (")
    assert f"delete it and plan the run again with its own config: mer loso --config {run_dir}/config.yaml" in err


@pytest.mark.parametrize("text", ["model: [unclosed\n  class_path: x", "just a string", ""])
def test_damaged_config_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    run_dir = tmp_path / "run"
    planned_run(run_dir)
    (run_dir / "config.yaml").write_text(text)
    err = aggregate_only(run_dir, capsys)
    assert err.startswith(f"error: {run_dir}/config.yaml is damaged (") and "another --output" in err


FOLD_CSV_DAMAGE = {
    "cut short": (lambda text: text[: text.rindex(",")], "empty cells"),
    "a column missing": (lambda text: "\n".join(line.rsplit(",", 1)[0] for line in text.splitlines()),
                         "no column prob_positive"),
    "garbage": (lambda text: "\x00\x01garbage\n\"unclosed", None),
    "empty": (lambda text: "", "EmptyDataError"),
    "another fold's rows": (lambda text: text.replace(",1,", ",0,"), "rows of another fold"),
    "a label outside the classes": (lambda text: text.replace("synthetic,1,1,", "synthetic,1,7,"),
                                    "label values outside the 2 classes"),
}


@pytest.mark.parametrize("damage", FOLD_CSV_DAMAGE)
def test_damaged_fold_predictions(tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    run_dir = tmp_path / "run"
    planned_run(run_dir)
    fold_csv = run_dir / "folds" / "fold_001.csv"
    change, reason = FOLD_CSV_DAMAGE[damage]
    fold_csv.write_text(change(fold_csv.read_text()))
    err = aggregate_only(run_dir, capsys)
    assert err.startswith(f"error: {fold_csv} is damaged (") and (reason is None or reason in err), err
    assert f"delete it and fold_001.json beside it, then rerun: mer loso --config {run_dir}/config.yaml --output " \
           f"{run_dir} --folds 1" in err


def test_damaged_fold_plan(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    planned_run(run_dir)
    path = run_dir / FOLD_PLAN
    for text, reason in (('{"kind": "loso", "folds": [{"fo', "JSONDecodeError"), ('{"kind": "loso"}', "no folds"),
                         ('{"folds": [{"fold": 0}]}', "no fold 1"), ('{"folds": "all"}', "no fold 1")):
        path.write_text(text)
        with pytest.raises(MERError, match=rf"^{path} is damaged \(.*{reason}.*\); delete it and rerun") as caught:
            check_fold_plan(run_dir, 1, datamodule=None)
        assert "\n" not in str(caught.value)
    path.write_text("[]")
    with pytest.raises(MERError, match=rf"^{path} is damaged \(not a JSON mapping but list\)"):
        _check_same_fold_plan(run_dir, {})


def test_damaged_fold_group_record(tmp_path: Path) -> None:
    group = tmp_path / "folds" / "group_0-1"
    group.mkdir(parents=True)
    (group / "last.ckpt").write_bytes(b"")
    (group / "group.json").write_text('{"fol')
    with pytest.raises(MERError, match=rf"^{group}/group.json is damaged .*; delete the folder {group} \(its folds train again\)$"):
        started_groups(tmp_path, [0, 1])


def test_damaged_sweep_trial_and_study_records(tmp_path: Path) -> None:
    trial = tmp_path / "trials" / "lambda_au=0.5"
    trial.mkdir(parents=True)
    metrics = trial / "metrics.json"
    for text in ('{"uf1": 0.5, "ua', '{"uf1": 0.5}', "0.5"):
        metrics.write_text(text)
        with pytest.raises(MERError, match=rf"^{metrics} is damaged .*; pool the trial's run again: mer loso "
                                           rf"--aggregate-only {trial}$"):
            read_pooled(metrics)
        with pytest.raises(MERError, match="is damaged"):
            trial_scores(trial, "pooled/uf1")
    measures = tmp_path / "study" / "study_measures.json"
    measures.parent.mkdir()
    for text in ("{", '["scores"]'):
        measures.write_text(text)
        with pytest.raises(MERError, match=rf"^{measures} is damaged .*; delete it and rerun the same mer study command"):
            read_record(measures.parent)


def test_damaged_sweep_settings(tmp_path: Path) -> None:
    settings = tmp_path / "sweep.json"
    for text in ('{"trials": 3, "wand', '{"trials": 3, "surprise": 1}', '[3]'):
        settings.write_text(text)
        with pytest.raises(MERError, match=rf"^{settings} is damaged .*; delete it and rerun the same mer sweep command"):
            SweepSettings.load(tmp_path)


def test_damaged_sweep_spec_copy(tmp_path: Path) -> None:
    copy = tmp_path / "spec.yaml"
    copy.write_text("method: grid\nparameters: [unclosed")
    with pytest.raises(MERError, match=rf"^{copy} is damaged \(YAML: .* at line 2\); copy the spec the study was started with"):
        check_output(load_spec(Path("configs/sweeps/medn_lambda_au.yaml")), tmp_path, [])


def test_damaged_sweep_journal(tmp_path: Path) -> None:
    spec = load_spec(Path("configs/sweeps/medn_lambda_au.yaml"))
    study = open_study(tmp_path, spec, seed=0)
    for _ in range(2):
        study.tell(study.ask(), 0.5)
    journal = tmp_path / "study.journal"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join([*lines[:2], lines[2][:12] + "garbage", *lines[3:]]) + "\n")
    with pytest.raises(MERError, match=rf"^{journal} is damaged .*; restore it, or delete it to start the study again"):
        open_study(tmp_path, spec, seed=0)


def test_audit_names_a_damaged_fold_file_as_a_failed_check(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    planned_run(run_dir)
    folds = pd.concat(pd.read_csv(run_dir / "folds" / f"fold_{k:03d}.csv") for k in (0, 1))
    folds.to_csv(run_dir / "predictions.csv", index=False)
    (run_dir / "metrics.json").write_text(json.dumps({"uf1": 0.5}))
    (run_dir / "folds" / "fold_001.csv").write_bytes(b'sample_id,subject\n"unclosed')
    check = next(c for c in audit_run(run_dir).checks if c.name == "pooled = fold files")
    assert not check.passed and check.reason.startswith("folds/fold_001.csv unreadable (ParserError: ")


def test_probe_names_a_damaged_checkpoint(tmp_path: Path) -> None:
    """Flipped bytes in the stored weights: torch.load would read them; the probe refuses the file."""
    model, path = torch.nn.Linear(8, 3), tmp_path / "last.ckpt"
    torch.save({"state_dict": model.state_dict(), "epoch": 0}, path)
    data = bytearray(path.read_bytes())
    start = data.index(model.weight.detach().numpy().tobytes()[:16])
    data[start:start + 8] = bytes(b ^ 0xFF for b in data[start:start + 8])
    path.write_bytes(bytes(data))
    with pytest.raises(MERError, match=rf"^{path} is damaged \(.*fails its CRC check\); mer probe needs the weights"):
        load_weights(torch.nn.Linear(8, 3), path, None)
