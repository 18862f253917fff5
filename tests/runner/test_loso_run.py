"""`mer loso` end to end on a tiny synthetic set (4 subjects, 2 epochs): outputs and pooled metrics,
and that every way of running a fold gives the same predictions: 2 CPU workers, a fold killed
(SIGKILL) mid-training and resumed, a fold under SLURM next to planted ``hpc_ckpt_*`` files, a fold
whose checkpoints were damaged after a kill (truncated: it resumes from the previous one; corrupted: it
trains again). Ctrl-C mid-fold exits 130 with the resume line; aggregating again adds no W&B run. One
uninterrupted sequential run is the reference."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.errors import MERError
from experiments.audit.checks import audit_run
from experiments.loso import parse as parse_loso
from experiments.runner.orchestration import run_loso
from experiments.runner.options import LosoOptions
from experiments.runner.planning import plan_run
from experiments.runner.run_plan import RunPlan

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = ["--trainer.max_epochs", "2"]
ONE_AT_A_TIME = ["--fold-batch", "off"]  # the sequential path (MEDN is fold-batched by default; tests/runner/test_fold_batch.py)
THREADS = 1  # the same intra-op thread count in every run compared here (the runner records it per run)

pytestmark = pytest.mark.slow  # every test here reads or reruns a whole `mer loso` run


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


def resolved(config: Path, *overrides: str) -> str:
    """The config as `mer loso` hands it to the runner."""
    return parse_loso(["--config", str(config), *overrides]).fold_config_yaml()


def read_fold(run_dir: Path, k: int) -> pd.DataFrame:
    return pd.read_csv(run_dir / "folds" / f"fold_{k:03d}.csv", dtype={"subject": str, "sample_id": str})


def mer_loso(*args: str) -> list[str]:
    return [sys.executable, "-c", "from experiments.main import mer_main; mer_main()", "loso", *args]


def paused_mer(epoch: int, marker: Path, *args: str) -> list[str]:
    """`mer ARGS` pausing fold 0 right after its epoch-`epoch` checkpoint until a signal (tests.helpers.paused_mer)."""
    return [sys.executable, "-m", "tests.helpers.paused_mer", str(epoch), str(marker), *args]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, f"the process ended before {path} existed"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def finished_run(tiny_config, tmp_path_factory):
    output = tmp_path_factory.mktemp("loso") / "run"
    metrics = run_loso(resolved(tiny_config, *EPOCHS), LosoOptions.of(fold_batch="off", output=output, threads_per_fold=THREADS))
    return output, metrics


def test_outputs_and_pooled_metrics(finished_run):
    output, metrics = finished_run
    for name in ("predictions.csv", "metrics.json", "confusion_matrix.png", "config.yaml", "run.json"):
        assert (output / name).is_file(), name
    for k in range(4):
        assert (output / "folds" / f"fold_{k:03d}" / "last.ckpt").is_file()
        assert (output / "folds" / f"fold_{k:03d}" / "logs" / "version_0" / "metrics.csv").is_file()
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
    run = json.loads((output / "run.json").read_text())
    assert run["threads_per_fold"] == THREADS and run["n_folds"] == 4 and run["folds"] == [0, 1, 2, 3]
    assert run["test_subjects"] == {"0": ["s00"], "1": ["s01"], "2": ["s02"], "3": ["s03"]}


def test_every_subject_is_tested_in_exactly_one_fold(finished_run):
    output, _ = finished_run
    predictions = pd.read_csv(output / "predictions.csv", dtype={"subject": str})
    assert predictions["sample_id"].is_unique
    assert predictions.groupby("subject")["fold"].nunique().eq(1).all()
    assert sorted(predictions["subject"].unique()) == ["s00", "s01", "s02", "s03"]
    assert predictions.groupby("fold")["subject"].nunique().eq(1).all()


def test_wandb_offline_runs_one_per_fold_plus_pooled(finished_run):
    output, _ = finished_run
    assert len(list((output / "wandb").glob("offline-run-*"))) == 5  # 4 folds + pooled


def test_rerun_skips_finished_folds_and_aggregation_is_rerunnable(finished_run, tiny_config):
    output, metrics = finished_run
    stamps = {p: p.stat().st_mtime_ns for p in (output / "folds").glob("fold_*.csv")}
    again = run_loso(resolved(tiny_config, *EPOCHS), LosoOptions.of(fold_batch="off", output=output, wandb="disabled"))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["uf1"] == metrics["uf1"] and again["uar"] == metrics["uar"]
    pooled = run_loso("", LosoOptions.of(aggregate_only=output, wandb="disabled"))
    assert pooled["confusion_matrix"] == metrics["confusion_matrix"]


def test_other_config_into_same_output_is_refused_naming_the_keys(finished_run, tiny_config):
    output, _ = finished_run
    with pytest.raises(MERError, match="model.init_args.lambda_orth 1.0 → 0.5; trainer.max_epochs 2 → 1"):
        run_loso(resolved(tiny_config, "--model.init_args.lambda_orth", "0.5"), LosoOptions.of(fold_batch="off", output=output))


def test_two_cpu_workers_give_the_sequential_predictions(finished_run, tiny_config, tmp_path, capsys):
    reference, _ = finished_run
    output = tmp_path / "workers"
    run_loso(resolved(tiny_config, *EPOCHS), LosoOptions.of(fold_batch="off", output=output, workers=2, threads_per_fold=THREADS,
                                                          wandb="disabled"))
    pd.testing.assert_frame_equal(pd.read_csv(output / "predictions.csv"), pd.read_csv(reference / "predictions.csv"),
                                  check_exact=True)
    assert "w0: " in capsys.readouterr().err  # per-worker status on the fold bar


def test_fold_killed_mid_training_resumes_to_identical_predictions(finished_run, tiny_config, tmp_path):
    reference, _ = finished_run
    output, marker = tmp_path / "killed", tmp_path / "paused"
    arguments = ["loso", "--config", str(tiny_config), *EPOCHS, *ONE_AT_A_TIME, "--output", str(output), "--folds", "0",
                 "--threads-per-fold", str(THREADS), "--wandb", "disabled"]
    process = subprocess.Popen(paused_mer(0, marker, *arguments), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(marker, process)  # epoch 1 of 2 is done and saved
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (output / "folds" / "fold_000.csv").exists()
    finished = subprocess.run(mer_loso(*arguments[1:]), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "still to do: fold 1 (subject s01), fold 2 (subject s02), fold 3 (subject s03)" in finished.stdout
    assert f"finish with: mer loso --config {output}/config.yaml --output {output} --folds 1-3" in finished.stdout
    resumed_log = output / "folds" / "fold_000" / "logs" / "version_1" / "metrics.csv"
    assert pd.read_csv(resumed_log)["epoch"].tolist() == [1], "the kill came after training: nothing was resumed"
    pd.testing.assert_frame_equal(read_fold(output, 0), read_fold(reference, 0), check_exact=True)


def test_ctrl_c_mid_fold_exits_130_with_the_resume_line(tiny_config, tmp_path):
    """Ctrl-C while fold 0 trains its second epoch: the signal lands at a known point (the paused fold has
    saved epoch 0 and writes nothing), not whenever a busy machine lets the test look at the files."""
    output, marker = tmp_path / "interrupted", tmp_path / "paused"
    command = paused_mer(0, marker, "loso", "--config", str(tiny_config), *EPOCHS, *ONE_AT_A_TIME, "--output", str(output),
                         "--folds", "0", "--wandb", "disabled")
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    wait_for(marker, process)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "interrupted: 0 of 4 folds finished" in err and f"--output {output}" in err
    assert "interrupted" not in out  # the resume line is a message to the user: stderr
    assert list(output.rglob("*.tmp*")) == [] and not (output / "folds" / "fold_000.csv").exists()
    assert torch.load(output / "folds" / "fold_000" / "last.ckpt", weights_only=False)["epoch"] == 0


@pytest.fixture(scope="module")
def killed_after_training(tiny_config, tmp_path_factory):
    """Fold 0 of a run (the reference run's config) SIGKILLed right after its last epoch-end checkpoint,
    before predicting: last.ckpt holds epoch 1, previous.ckpt epoch 0."""
    output = tmp_path_factory.mktemp("killed") / "run"
    marker = output.parent / "paused"
    process = subprocess.Popen(paused_mer(1, marker, "loso", "--config", str(tiny_config), *EPOCHS, *ONE_AT_A_TIME, "--output",
                                          str(output), "--folds", "0", "--threads-per-fold", str(THREADS),
                                          "--wandb", "disabled"),
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(marker, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    fold = output / "folds" / "fold_000"
    assert torch.load(fold / "last.ckpt", weights_only=False)["epoch"] == 1
    assert torch.load(fold / "previous.ckpt", weights_only=False)["epoch"] == 0
    return output


def resume_damaged(killed: Path, reference: Path, tiny_config: Path, run_dir: Path, damage) -> subprocess.CompletedProcess:
    """A copy of the killed run whose fold 0 checkpoints `damage` spoils, folds 1-3 taken over from the
    reference run (same config), resumed by the same command."""
    shutil.copytree(killed, run_dir)
    damage(run_dir / "folds" / "fold_000")
    for k in (1, 2, 3):
        for suffix in (".csv", ".json"):
            shutil.copy(reference / "folds" / f"fold_{k:03d}{suffix}", run_dir / "folds")
    return subprocess.run(mer_loso("--config", str(tiny_config), *EPOCHS, *ONE_AT_A_TIME, "--output", str(run_dir), "--threads-per-fold",
                                   str(THREADS), "--wandb", "disabled"), cwd=ROOT, capture_output=True, text=True, timeout=600)


def logged_epochs(fold_dir: Path) -> dict[str, list[int]]:
    return {version.name: pd.read_csv(version / "metrics.csv")["epoch"].dropna().astype(int).unique().tolist()
            for version in sorted((fold_dir / "logs").iterdir())}


def test_truncated_checkpoint_resumes_from_the_previous_one(killed_after_training, finished_run, tiny_config, tmp_path):
    reference, _ = finished_run
    run_dir = tmp_path / "truncated"

    def truncate(fold: Path) -> None:
        last = fold / "last.ckpt"
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])

    done = resume_damaged(killed_after_training, reference, tiny_config, run_dir, truncate)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    named = [line for line in done.stderr.splitlines() if "last.ckpt" in line]
    assert len(named) == 1 and f"{run_dir}/folds/fold_000/last.ckpt is unreadable" in named[0] \
        and "resuming from previous.ckpt (epoch 0)" in named[0], done.stderr[-3000:]
    fold = run_dir / "folds" / "fold_000"
    assert logged_epochs(fold) == {"version_0": [0], "version_1": [1]}  # epoch 1 trained again, no empty log
    assert not (fold / "previous.ckpt").exists()  # a finished fold keeps its last checkpoint only
    pd.testing.assert_frame_equal(read_fold(run_dir, 0), read_fold(reference, 0), check_exact=True)
    assert audit_run(run_dir).passed


def test_corrupted_checkpoints_restart_the_fold(killed_after_training, finished_run, tiny_config, tmp_path):
    """Bytes flipped inside last.ckpt's weights (torch.load alone would not notice) and an empty
    previous.ckpt: the fold trains again from the start, to the reference's predictions."""
    reference, _ = finished_run
    run_dir = tmp_path / "corrupted"

    def corrupt(fold: Path) -> None:
        last = fold / "last.ckpt"
        data = bytearray(last.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
        last.write_bytes(bytes(data))
        (fold / "previous.ckpt").write_bytes(b"")

    done = resume_damaged(killed_after_training, reference, tiny_config, run_dir, corrupt)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    named = [line for line in done.stderr.splitlines() if "last.ckpt" in line]
    assert len(named) == 1 and "fails its CRC check" in named[0] and "previous.ckpt is unreadable" in named[0] \
        and "training it again from the start" in named[0], done.stderr[-3000:]
    assert logged_epochs(run_dir / "folds" / "fold_000") == {"version_0": [0, 1]}
    pd.testing.assert_frame_equal(read_fold(run_dir, 0), read_fold(reference, 0), check_exact=True)
    assert audit_run(run_dir).passed


def test_aggregate_only_logs_to_the_one_pooled_wandb_run(finished_run, tmp_path):
    """Aggregating a pooled run again opens no new W&B run while the pooled metrics are unchanged; once they
    change, they go to the run of the same id."""
    reference, _ = finished_run
    run_dir = tmp_path / "pooled"
    shutil.copytree(reference, run_dir)
    settings = json.loads((run_dir / "run.json").read_text())  # as pooled first (a rerun above may have disabled W&B)
    (run_dir / "run.json").write_text(json.dumps({**settings, "wandb": "offline"}))
    pooled_id = RunPlan.load(run_dir).group + "-pooled"

    def pooled_folders() -> list[str]:
        return sorted(path.name.split("-", 3)[-1] for path in (run_dir / "wandb").glob("offline-run-*-pooled"))

    assert pooled_folders() == [pooled_id]
    for _ in range(2):
        run_loso("", LosoOptions.of(aggregate_only=run_dir))
    assert pooled_folders() == [pooled_id]
    predictions = read_fold(run_dir, 0)  # another prediction for one sample: other pooled metrics
    other = (int(predictions.loc[0, "pred"]) + 1) % 3
    predictions.loc[0, ["prob_negative", "prob_positive", "prob_surprise"]] = np.eye(3)[other]
    predictions.loc[0, "pred"] = other
    predictions.to_csv(run_dir / "folds" / "fold_000.csv", index=False)
    run_loso("", LosoOptions.of(aggregate_only=run_dir))
    assert pooled_folders() == [pooled_id, pooled_id]


def test_no_fold_loads_a_planted_slurm_checkpoint(finished_run, tiny_config, tmp_path):
    """Lightning resumes from ``hpc_ckpt_*.ckpt`` in a Trainer's root dir when it runs under SLURM; a
    checkpoint with other weights in the working directory, the run directory and the fold's own
    directory (a stale mid-epoch one) must change nothing."""
    reference, _ = finished_run
    run_dir = tmp_path / "slurm-run"
    plan_run(resolved(tiny_config, *EPOCHS), LosoOptions.of(fold_batch="off", threads_per_fold=THREADS, wandb="disabled"), run_dir)
    planted = torch.load(reference / "folds" / "fold_001" / "last.ckpt", weights_only=False)
    planted["state_dict"] = {name: torch.zeros_like(value) for name, value in planted["state_dict"].items()}
    cwd = tmp_path / "cwd"
    for folder in (cwd, run_dir, run_dir / "folds" / "fold_001"):
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(planted, folder / "hpc_ckpt_1.ckpt")
    env = {**os.environ, "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "mer-folds",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "experiments.runner.executors.worker", str(run_dir), "--folds", "1"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    pd.testing.assert_frame_equal(read_fold(run_dir, 1), read_fold(reference, 1), check_exact=True)
