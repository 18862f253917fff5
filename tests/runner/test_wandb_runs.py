"""W&B runs of a LOSO run started by ``wandb agent`` (offline): each fold has its own run grouped under
the trial, the trial's run (the agent's run id) gets the pooled metrics. Read back from wandb's own
offline files (``run-<id>.wandb``: a LevelDB-style log of ``Record`` protobufs)."""

from __future__ import annotations

import json
import os
import statistics
import struct
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml
from wandb.proto import wandb_internal_pb2
from wandb.sdk.lib.service.service_token import UnixServiceToken

from experiments.main import mer_main
from experiments.runner.run_plan import RunPlan
from experiments.runner.wandb_runs import fold_logger_args, forget_dead_wandb_service
from tests.conftest import run_in_process

SWEEP_ID, TRIAL_ID = "sweep7ab", "trial3xy"
BLOCK, HEADER = 32768, 7  # wandb's log: 7-byte file header, 32 KiB blocks of (crc32, length, type) chunks
FULL, LAST = 1, 4


def wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """The records of a ``.wandb`` file (chunks never cross a 32 KiB block; a block's tail < 7 bytes is padding)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb log"
    records, pos, payload = [], HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        payload += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            records.append(record)
            payload = b""
    return records


def offline_runs(run_dir: Path) -> dict[str, dict]:
    """run id → its run record fields, config and last summary values, for every offline run under `run_dir`."""
    runs = {}
    for log in run_dir.glob("**/wandb/offline-run-*/run-*.wandb"):
        run, config, summary = None, {}, {}
        for record in wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            elif kind == "config":
                config.update({item.key: json.loads(item.value_json) for item in record.config.update})
            elif kind == "summary":
                summary.update({item.key: json.loads(item.value_json) for item in record.summary.update if item.key})
        assert run is not None, f"{log} has no run record"
        assert run.run_id not in runs, f"two W&B runs share the id {run.run_id}: {log}"
        runs[run.run_id] = {"group": run.run_group, "job_type": run.job_type, "sweep_id": run.sweep_id,
                            "project": run.project, "config": config, "summary": summary}
    return runs


def offline_histories(run_dir: Path) -> dict[str, list[dict]]:
    """run id → its logged rows (``run.log`` calls), for every offline run under `run_dir`."""
    histories = {}
    for log in run_dir.glob("**/wandb/offline-run-*/run-*.wandb"):
        records = wandb_records(log)
        run_id = next(r.run.run_id for r in records if r.WhichOneof("record_type") == "run")
        histories[run_id] = [{"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in r.history.item}
                             for r in records if r.WhichOneof("record_type") == "history"]
    return histories


def agent_environment(base: Path) -> dict[str, str]:
    """What ``wandb agent entity/project/ID`` puts into a trial command's environment (wandb 0.31,
    ``Agent._command_run``/``run_agent``), with the trial's parameter file written as the agent does."""
    param_path = base / "wandb" / f"sweep-{SWEEP_ID}" / f"config-{TRIAL_ID}.yaml"
    param_path.parent.mkdir(parents=True)
    param_path.write_text(yaml.safe_dump({"model.init_args.lambda_au": {"value": 0.5}}))
    return {"WANDB_SWEEP_ID": SWEEP_ID, "WANDB_RUN_ID": TRIAL_ID, "WANDB_SWEEP_PARAM_PATH": str(param_path),
            "WANDB_DIR": str(base), "WANDB_ENTITY": "lab", "WANDB_PROJECT": "lambda-study", "WANDB_MODE": "offline"}


@pytest.mark.slow
def test_agent_trial_gets_pooled_metrics_and_every_fold_its_own_run(tiny_config, tmp_path, capsys):
    """Folds 0-1 in the agent's process itself, 2-3 in spawned workers started with the agent's variables
    and with a ``WANDB_SERVICE`` naming a wandb service that is gone (as after a torn-down session)."""
    run_dir = tmp_path / "trial"
    command = ["loso", "--config", str(tiny_config), "--model.init_args.lambda_au=0.5", f"--output={run_dir}"]
    agent = agent_environment(tmp_path)
    gone = UnixServiceToken(parent_pid=os.getpid(), path=str(tmp_path / "gone.sock")).env_value
    for extra, stale in ((["--folds=0-1"], {}), (["--workers=2"], {"WANDB_SERVICE": gone})):
        with mock.patch.dict(os.environ, {**agent, **stale}):  # the whole environment is restored on exit
            code, _, err = run_in_process(mer_main, command + extra, capsys)
        assert code == 0, err

    runs = offline_runs(run_dir)
    folds = {run_id: run for run_id, run in runs.items() if run["job_type"] == "fold"}
    assert sorted(folds) == [f"{TRIAL_ID}-fold-{k:03d}" for k in range(4)]
    for run in folds.values():
        assert run["group"] == TRIAL_ID and run["sweep_id"] == "" and run["project"] == "lambda-study"
        assert "pooled/uf1" not in run["summary"]
    assert set(runs) == {*folds, TRIAL_ID}
    trial = runs[TRIAL_ID]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert trial["sweep_id"] == SWEEP_ID and trial["group"] == TRIAL_ID and trial["job_type"] == "pooled"
    assert trial["config"]["model.init_args.lambda_au"] == 0.5  # the agent's parameters: it is the agent's run
    for key in ("uf1", "uar", "acc"):
        assert trial["summary"][f"pooled/{key}"] == pytest.approx(metrics[key], abs=1e-6)
        assert trial["summary"][f"pooled/synthetic/{key}"] == pytest.approx(metrics["per_dataset"]["synthetic"][key],
                                                                            abs=1e-6)


@pytest.mark.slow
def test_a_trial_over_seeds_has_the_seeds_mean_as_its_sweep_metric(tiny_config, tmp_path, capsys):
    """``--seeds 0,1`` in a trial (2 subject-independent folds each): every seed's folds and pooled
    metrics are runs of their own in the trial's group; the trial's run gets the mean over the seeds."""
    output = tmp_path / "trial"
    command = ["loso", "--config", str(tiny_config), "--data.init_args.k_folds=2", f"--output={output}", "--seeds=0,1"]
    with mock.patch.dict(os.environ, agent_environment(tmp_path)):
        code, _, err = run_in_process(mer_main, command, capsys)
    assert code == 0, err

    runs = offline_runs(output)
    seeds = {s: json.loads((output / f"seed_{s}" / "metrics.json").read_text()) for s in (0, 1)}
    assert set(runs) == {TRIAL_ID} | {f"{TRIAL_ID}-seed_{s}-fold-{k:03d}" for s in (0, 1) for k in (0, 1)} | {
        f"{TRIAL_ID}-seed_{s}-pooled" for s in (0, 1)}
    assert {run["group"] for run in runs.values()} == {TRIAL_ID}
    for s, metrics in seeds.items():
        assert runs[f"{TRIAL_ID}-seed_{s}-pooled"]["summary"]["pooled/uf1"] == pytest.approx(metrics["uf1"], abs=1e-6)
    trial = runs[TRIAL_ID]["summary"]
    for key in ("uf1", "uar", "acc"):
        values = [metrics[key] for metrics in seeds.values()]
        assert trial[f"pooled/{key}"] == pytest.approx(statistics.mean(values), abs=1e-6)
        assert trial[f"pooled/{key}_std"] == pytest.approx(statistics.stdev(values), abs=1e-6)
    assert runs[TRIAL_ID]["sweep_id"] == SWEEP_ID and runs[TRIAL_ID]["config"]["seeds"] == [0, 1]


def test_slurm_launcher_inside_an_agent_is_refused_before_anything_is_written(tiny_config, tmp_path, capsys):
    command = ["loso", "--config", str(tiny_config), f"--output={tmp_path / 'trial'}", "--launcher=slurm", "--dry-run"]
    with mock.patch.dict(os.environ, agent_environment(tmp_path)):
        code, _, err = run_in_process(mer_main, command, capsys)
    assert code == 2 and err.count("\n") == 1 and "--launcher slurm inside a wandb agent trial" in err
    assert not (tmp_path / "trial").exists()


def test_outside_an_agent_folds_are_grouped_per_run_directory(tmp_path, monkeypatch):
    for name in ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "MER_PARKED_WANDB_SWEEP_ID", "MER_PARKED_WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    plan = RunPlan(config_hash="abc", n_folds=2, folds=[0, 1], test_subjects={0: ["s0"], 1: ["s1"]},
                   class_names=["a", "b"], base_seed=0, threads_per_fold=1, group="run-abc")
    args = fold_logger_args(plan, tmp_path, 1)
    assert (args["id"], args["group"], args["project"], args["name"]) == ("run-abc-fold-001", "run-abc", "mer-suite",
                                                                         "fold-001-s1")


def test_a_service_token_whose_socket_is_gone_is_dropped(tmp_path, monkeypatch):
    """Tokens written by wandb's own UnixServiceToken: kept while the socket exists, dropped once it is gone."""
    alive = tmp_path / "alive.sock"
    alive.touch()
    monkeypatch.setenv("WANDB_SERVICE", UnixServiceToken(parent_pid=1, path=str(alive)).env_value)
    forget_dead_wandb_service()
    assert os.environ["WANDB_SERVICE"].endswith(str(alive))
    monkeypatch.setenv("WANDB_SERVICE", UnixServiceToken(parent_pid=1, path=str(tmp_path / "gone.sock")).env_value)
    forget_dead_wandb_service()
    assert "WANDB_SERVICE" not in os.environ


@pytest.mark.slow
def test_fold_batched_folds_log_the_curves_a_sequential_fold_logs(tiny_config, tmp_path, capsys):
    """The same folds one at a time and fold-batched (the default for MEDN): every fold has its own W&B run
    (id ``<group>-fold-<k>``) with the same training curves (keys, epochs, x axis), its own values."""
    histories = {}
    for mode in ("off", "auto"):
        run_dir = tmp_path / mode
        command = ["loso", "--config", str(tiny_config), "--trainer.max_epochs=2", "--folds=0-1", f"--output={run_dir}",
                   "--wandb=offline", *(["--fold-batch=off"] if mode == "off" else [])]
        code, _, err = run_in_process(mer_main, command, capsys)
        assert code == 0, err
        assert RunPlan.load(run_dir).fold_batch == mode
        group = RunPlan.load(run_dir).group
        histories[mode] = {k: offline_histories(run_dir)[f"{group}-fold-{k:03d}"] for k in range(2)}
    assert any((tmp_path / "auto" / "folds").glob("group_*")) and not any((tmp_path / "off" / "folds").glob("group_*"))

    def curves(rows: list[dict]) -> list[dict]:
        return [row for row in rows if any(key.startswith("train/") for key in row)]

    for k in range(2):
        sequential, batched = curves(histories["off"][k]), curves(histories["auto"][k])
        assert [sorted(row) for row in batched] == [sorted(row) for row in sequential], k
        assert {"train/loss", "train/cls", "train/au", "train/orth"} <= set(batched[0])
        for rows in (sequential, batched):  # an epoch's values at its last step (steps per epoch differ by mode)
            assert [row["epoch"] for row in rows] == [0, 1]
            assert 2 * (rows[0]["trainer/global_step"] + 1) == rows[1]["trainer/global_step"] + 1
    first_losses = [curves(histories["auto"][k])[0]["train/loss"] for k in range(2)]
    assert first_losses[0] != first_losses[1]  # each fold's own values, not one fold's copied


def test_fold_loggers_hand_wandb_no_anonymous_setting(tmp_path):
    """Lightning's WandbLogger always passes anonymous=None, and wandb warns "The anonymous setting has no
    effect" for any value given, once per process; the fold runs' logger leaves the unset argument out."""
    from lightning.pytorch import loggers

    from experiments.runner.wandb_logger import WandbLogger

    assert loggers.WandbLogger(offline=True, save_dir=str(tmp_path))._wandb_init["anonymous"] is None  # the cause
    assert "anonymous" not in WandbLogger(offline=True, save_dir=str(tmp_path))._wandb_init
    assert "anonymous" in WandbLogger(offline=True, save_dir=str(tmp_path), anonymous=True)._wandb_init  # asked for
    script = ("import sys\nfrom experiments.runner.wandb_logger import WandbLogger\n"
              "WandbLogger(offline=True, save_dir=sys.argv[1], project='p').experiment.finish()\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "anonymous" not in result.stderr and list(tmp_path.glob("wandb/offline-run-*"))
