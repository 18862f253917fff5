"""``mer sweep``: a 2×2 grid (λ_au × λ_orth) of whole LOSO runs of the tiny synthetic MEDN (it has AU
labels, so λ_au weighs a real loss term) with 2 local workers, one SIGKILLed mid-trial; the trial
retry, resume, plots and table; the SLURM scripts (--dry-run); the stale-trial reclaim on its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from experiments.main import mer_main
from experiments.sweep.spec import load_spec
from experiments.sweep.summary import swept
from datamodules.errors import MERError
from experiments.runner.seed_runs import seeds_metrics
from experiments.sweep.study import SweepSettings, metric_value, next_trial, open_study, reclaim_stale, unfinished
from tests.conftest import ROOT, run_in_process

LAMBDA_AU, LAMBDA_ORTH = "model.init_args.lambda_au", "model.init_args.lambda_orth"
GRID = {LAMBDA_AU: [0.0, 1.0], LAMBDA_ORTH: [0.5, 1.0]}
N_FOLDS = 4  # tiny_config: 4 subjects, LOSO


def write_spec(path: Path, config: Path, **extra) -> Path:
    """A W&B-style grid spec over GRID whose command runs `mer loso --config <config>`."""
    spec = {"name": "tiny-grid", "program": "mer", "method": "grid",
            "metric": {"name": "pooled/uf1", "goal": "maximize"},
            "parameters": {name: {"values": values} for name, values in GRID.items()},
            # one fold after another: the tests look at folds finishing one by one and at fold_000's own log
            "command": ["${env}", "mer", "loso", "--config", str(config), "--fold-batch", "off", "${args}"], **extra}
    path.write_text(yaml.safe_dump(spec))
    return path


def first_loss_row(run_dir: Path) -> pd.Series:
    return pd.read_csv(next((run_dir / "folds" / "fold_000" / "logs").glob("version_*/metrics.csv"))).iloc[0]


@pytest.mark.slow
def test_grid_with_a_killed_worker_finishes_every_trial(tiny_config, tmp_path):
    spec = write_spec(tmp_path / "grid.yaml", tiny_config)
    output = tmp_path / "sweep"
    command = [sys.executable, "-c", "from experiments.main import mer_main; mer_main()", "sweep", str(spec),
               "--output", str(output), "--parallel", "2", "--wandb", "disabled", "--heartbeat", "1",
               "--grace-period", "6"]
    sweep = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim, kept = None, {}
    try:
        while victim is None and sweep.poll() is None:
            time.sleep(0.2)
            if not (output / "study.journal").exists():
                continue
            for trial in open_study(output, load_spec(spec), 0).get_trials(states=(TrialState.RUNNING,)):
                done = sorted((output / trial.user_attrs.get("run_dir", "not yet") / "folds").glob("fold_*.csv"))
                if 0 < len(done) < N_FOLDS:  # midway: some folds finished, others not
                    victim, kept = trial, {path: path.stat().st_mtime_ns for path in done}
                    os.kill(int(trial.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
                    break
        log = sweep.communicate(timeout=170)[0]
    finally:
        if sweep.poll() is None:  # a failed check: stop mer sweep, which stops its workers
            sweep.terminate()
            sweep.wait(timeout=60)
    assert victim is not None, f"no trial was caught midway\n{log}"
    assert sweep.returncode == 0, log
    assert "exited with code -9" in log

    table = pd.read_csv(output / "trials.csv")
    complete = table[table["state"] == "COMPLETE"]
    assert sorted(zip(complete["lambda_au"], complete["lambda_orth"])) == [(0.0, 0.5), (0.0, 1.0), (1.0, 0.5), (1.0, 1.0)]
    failed = table[table["state"] == "FAIL"]
    assert list(failed["trial"]) == [victim.number]
    assert list(complete[complete["retry_of"] == victim.number]["run_dir"]) == [victim.user_attrs["run_dir"]]
    for path, mtime in kept.items():  # the retry resumed the run: folds finished before the kill are kept
        assert path.stat().st_mtime_ns == mtime
    for row in complete.itertuples():
        run_dir = output / row.run_dir
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["uf1"] == pytest.approx(row._6)  # the pooled/uf1 column
        init = metrics["config"]["model"]["init_args"]
        assert (init["lambda_au"], init["lambda_orth"]) == (row.lambda_au, row.lambda_orth)
        # MEDN eq. 16 with the trial's λ: L = L_cls + λ_au L_au + λ_orth L_orth (λ_au = 0 drops a real AU term)
        logged = first_loss_row(run_dir)
        assert logged["train/au"] > 0.01
        expected = logged["train/cls"] + row.lambda_au * logged["train/au"] + row.lambda_orth * logged["train/orth"]
        assert logged["train/loss"] == pytest.approx(expected, rel=1e-4)
        assert row.uf1 == pytest.approx(metrics["uf1"]) and row.uar == pytest.approx(metrics["uar"])
    for figure in ("figure6_lambda_au", "figure6_lambda_orth", "heatmap"):
        assert all((output / f"{figure}.{suffix}").stat().st_size > 0 for suffix in ("png", "pdf", "svg"))

    # the same command again: the study is resumed, finds nothing to do and summarizes
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 of 4 trials complete" in again.stdout
    assert len(pd.read_csv(output / "trials.csv")) == len(table)


def test_slurm_dry_run_writes_worker_array_and_summary_job(tiny_config, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = write_spec(tmp_path / "grid.yaml", tiny_config)
    output = tmp_path / "sweep"
    code, out, err = run_in_process(mer_main, ["sweep", str(spec), "--output", str(output), "--launcher", "slurm",
                                               "--parallel", "3", "--gpus-per-task", "1", "--cpus-per-task", "4",
                                               "--dry-run"], capsys)
    assert code == 0, err
    workers, summary = (output / "slurm" / "workers.sbatch").read_text(), (output / "slurm" / "summary.sbatch").read_text()
    assert "#SBATCH --array=0-2" in workers and "#SBATCH --gpus-per-task=1" in workers
    assert f'-m experiments.sweep.worker {output.resolve()} --index "$SLURM_ARRAY_TASK_ID"' in workers
    assert f"-m experiments.sweep.worker {output.resolve()} --summary" in summary
    assert "dry run: nothing submitted" in out and "--dependency=afterany" in out
    for script in ("workers.sbatch", "summary.sbatch"):
        assert subprocess.run(["bash", "-n", str(output / "slurm" / script)]).returncode == 0
    assert SweepSettings.load(output).threads_per_fold == 4 // 3
    assert not (output / "trials").exists()


@pytest.mark.slow
def test_the_shipped_synthetic_spec_runs_as_is(tmp_path):
    """configs/sweeps/medn_synthetic_demo.yaml from a fresh clone: 2 trials of the 8-fold MEDN synthetic run."""
    output = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-c", "from experiments.main import mer_main; mer_main()", "sweep",
                           "configs/sweeps/medn_synthetic_demo.yaml", "--output", str(output)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = pd.read_csv(output / "trials.csv")
    assert list(table["state"]) == ["COMPLETE", "COMPLETE"] and sorted(table["lambda_au"]) == [0.0, 1.0]
    assert table["pooled/uf1"].between(0, 1).all()
    for run_dir in table["run_dir"]:
        metrics = json.loads((output / run_dir / "metrics.json").read_text())
        assert metrics["n_folds"] == 8 and metrics["config"]["trainer"]["max_epochs"] == 2


@pytest.mark.slow
def test_a_study_takes_its_own_config_and_overrides(tiny_config, tmp_path, capsys, monkeypatch):
    """mer sweep SPEC --config FILE --trainer.X: the spec's config is replaced for every trial; a rerun
    with other base options is refused in one line."""
    monkeypatch.chdir(ROOT)
    spec = write_spec(tmp_path / "grid.yaml", tmp_path / "missing.yaml")  # the spec's own config does not exist
    output = tmp_path / "sweep"
    base = ["--config", str(tiny_config), "--trainer.max_epochs", "1"]
    code, out, err = run_in_process(mer_main, ["sweep", str(spec), *base, "--output", str(output), "--launcher",
                                               "slurm", "--dry-run"], capsys)
    assert code == 0, err
    assert SweepSettings.load(output).loso_overrides == base
    args = SweepSettings.load(output).spec(output).trial_args({LAMBDA_AU: 1.0})
    assert args[args.index("--config"):][:4] == base and args.count("--config") == 1
    code, _, err = run_in_process(mer_main, ["sweep", str(spec), "--config", str(tiny_config), "--output", str(output),
                                             "--launcher", "slurm", "--dry-run"], capsys)
    assert code == 2 and err.count("\n") == 1 and "base options" in err


def test_bad_parameter_name_and_foreign_output_are_one_line_errors(tiny_config, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    typo = tmp_path / "typo.yaml"
    typo.write_text((write_spec(tmp_path / "grid.yaml", tiny_config)).read_text().replace("lambda_au", "lamda_au"))
    code, _, err = run_in_process(mer_main, ["sweep", str(typo), "--output", str(tmp_path / "a"), "--dry-run",
                                             "--launcher", "slurm"], capsys)
    assert code == 2 and err.count("\n") == 1 and str(typo) in err and "lamda_au" in err

    output = tmp_path / "b"
    assert run_in_process(mer_main, ["sweep", str(tmp_path / "grid.yaml"), "--output", str(output), "--launcher",
                                     "slurm", "--dry-run"], capsys)[0] == 0
    unknown = write_spec(tmp_path / "unknown.yaml", tiny_config, metric={"name": "pooled/casme2/uf1", "goal": "maximize"})
    code, _, err = run_in_process(mer_main, ["sweep", str(unknown), "--output", str(tmp_path / "c"), "--dry-run",
                                             "--launcher", "slurm"], capsys)
    assert code == 2 and err.count("\n") == 1 and "pooled/casme2/uf1" in err and "synthetic" in err

    other = write_spec(tmp_path / "other.yaml", tiny_config, run_cap=2, method="random")
    code, _, err = run_in_process(mer_main, ["sweep", str(other), "--output", str(output), "--dry-run",
                                             "--launcher", "slurm"], capsys)
    assert code == 2 and err.count("\n") == 1 and "holds a study of another spec" in err


def test_parameters_sharing_a_last_name_keep_their_full_names(tmp_path: Path) -> None:
    both = {"model.init_args.lr": {"values": [0.1, 0.2]}, "data.init_args.lr": {"values": [3]}}
    spec = load_spec(write_spec(tmp_path / "s.yaml", tmp_path / "unused.yaml", parameters=both))
    assert spec.column_names == {name: name for name in both}
    assert spec.trial_name({"model.init_args.lr": 0.1, "data.init_args.lr": 3}) == "data.init_args.lr=3+model.init_args.lr=0.1"
    assert swept(spec) == ["model.init_args.lr"]
    assert load_spec(write_spec(tmp_path / "g.yaml", tmp_path / "unused.yaml")).column_names == {
        LAMBDA_AU: "lambda_au", LAMBDA_ORTH: "lambda_orth"}


def test_trial_metric_of_a_test_set_and_of_a_seeds_run() -> None:
    """pooled/<name>/<score> reads a database or an official test set; a --seeds trial is scored by the seeds' mean."""
    metrics = {"uf1": 0.5, "per_dataset": {"dfme": {"uf1": 0.4}}, "per_test_set": {"testA": {"uf1": 0.3}}}
    assert metric_value(metrics, "pooled/uf1", Path("m.json")) == 0.5
    assert metric_value(metrics, "pooled/dfme/uf1", Path("m.json")) == 0.4
    assert metric_value(metrics, "pooled/testA/uf1", Path("m.json")) == 0.3
    with pytest.raises(MERError, match="pooled/testB/uf1 is not in m.json.*for dfme, testA"):
        metric_value(metrics, "pooled/testB/uf1", Path("m.json"))
    summary = {"seeds": [0, 1], "pooled": {"uf1": {"mean": 0.6, "std": 0.1, "per_seed": [0.53, 0.67]}},
               "per_test_set": {"testA": {"uf1": {"mean": 0.2, "std": 0.0, "per_seed": [0.2, 0.2]}}}}
    assert metric_value(seeds_metrics(summary, "mean"), "pooled/uf1", Path("s.json")) == 0.6
    assert metric_value(seeds_metrics(summary, "mean"), "pooled/testA/uf1", Path("s.json")) == 0.2


def test_a_trial_without_heartbeat_is_queued_again_with_its_parameters(tmp_path, monkeypatch):
    """The reclaim alone (no training): a RUNNING trial whose heartbeat is older than the grace period
    is failed and queued as a retry of the same grid point, which the next worker takes first."""
    spec = load_spec(write_spec(tmp_path / "grid.yaml", tmp_path / "unused.yaml"))
    study = open_study(tmp_path, spec, seed=0)
    settings = SweepSettings(heartbeat=1, grace_period=10)
    first, second = next_trial(study, spec), next_trial(study, spec)
    assert first.params != second.params
    assert reclaim_stale(study, settings) == []  # fresh heartbeats
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 11)
    second.set_user_attr("heartbeat", now + 11)  # still beating
    assert [t.number for t in reclaim_stale(study, settings)] == [first.number]
    retried = next_trial(study, spec)
    assert retried.params == first.params and retried.number == 2
    assert retried.user_attrs["run_dir"] == first.user_attrs["run_dir"]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
    for trial in (second, retried):
        study.tell(trial, 0.5)
    assert unfinished(study, spec)  # two grid points are not drawn yet
    rest = [next_trial(study, spec), next_trial(study, spec)]
    assert next_trial(study, spec) is None
    drawn = {tuple(t.params.values()) for t in [second, retried, *rest]}
    assert len(drawn) == 4  # every grid point exactly once
