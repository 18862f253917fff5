"""``mer loso --launcher slurm`` on a real single-node SLURM (tests/helpers/slurm_cluster.py).

A synthetic LOSO (4 folds) is submitted as an array of 2 tasks of 2 folds. While each task trains
its second fold, task 0 is requeued by ``scontrol requeue`` (as a preemption would) and task 1 gets
USR1 (what ``--signal=USR1@90`` sends before the time limit), which Lightning's SLURM environment
answers by requeueing the task itself. Both folds must resume from their last epoch-end checkpoint,
and the aggregation job's pooled predictions and metrics must equal those of an uninterrupted local
run of the same config with the same threads per fold.

The tests marked ``slurm`` are skipped where SLURM is not installed, with the reason, and fail when
CI is set (.ci/run installs it); the option checks run everywhere.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from experiments.main import mer_main
from tests.helpers.slurm_cluster import FEATURE, TERMINAL, SlurmCluster, gres_indices, job_logs

EPOCHS = 16  # ~0.8 s per epoch on one thread: a fold trains long enough to be interrupted midway


def mer_loso(config: Path, output: Path, *options: str) -> None:
    """One fold after another (``--fold-batch off``): the tests follow and interrupt single folds."""
    mer_main(["loso", "--config", str(config), "--trainer.max_epochs", str(EPOCHS), "--output", str(output),
              "--threads-per-fold", "1", "--wandb", "disabled", "--fold-batch", "off", *options])


SLURM_OPTIONS = ("--launcher", "slurm", "--cpus-per-task", "1", "--folds-per-task", "2", "--array-parallelism", "2",
                 "--time", "00:15:00")


def mer_loso_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    """The one-line error of a `mer loso` call that must be refused (exit code 2)."""
    with pytest.raises(SystemExit) as exit_info:
        mer_loso(*args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("option", ["--folds-per-task", "--cpus-per-task", "--array-parallelism"])
def test_impossible_slurm_options_are_refused_before_anything_is_created(tiny_config, tmp_path, capsys, option):
    error = mer_loso_error(capsys, tiny_config, tmp_path / "run", *SLURM_OPTIONS, option, "0")
    assert option in error and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("options", "named"), [
    (("--mem", "16GB"), "--mem '16GB'"),
    (("--aggregate-mem", "lots"), "--aggregate-mem 'lots'"),
    (("--time", "4h"), "--time '4h'"),
    (("--aggregate-time", "soon"), "--aggregate-time 'soon'"),
    (("--max-requeues", "-1"), "--max-requeues -1"),
    (("--setup", "module load a\nmodule load b"), "one shell line per --setup"),
    (("--sbatch-option=--exclude=node1",), "KEY=VALUE"),
    (("--sbatch-option", "exclude="), "KEY=VALUE"),
    (("--sbatch-option", "partition=gpu"), "mer sets --partition from its option --partition; give that instead"),
    (("--sbatch-option", "signal=USR2@60"), "mer sets --signal itself"),
    (("--sbatch-option", "comment=a", "--sbatch-option", "comment=b"), "--comment is given twice"),
    (("--mem", "4G", "--sbatch-option", "mem-per-cpu=1G"), "one of --mem, --mem-per-cpu and --mem-per-gpu"),
])
def test_bad_cluster_options_are_refused_in_one_line_before_anything_is_created(tiny_config, tmp_path, capsys,
                                                                                options, named):
    error = mer_loso_error(capsys, tiny_config, tmp_path / "run", *SLURM_OPTIONS, *options, "--dry-run")
    assert named in error and not (tmp_path / "run").exists()


def test_without_sbatch_the_launch_is_refused_before_anything_is_created(tiny_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    error = mer_loso_error(capsys, tiny_config, tmp_path / "run", *SLURM_OPTIONS)
    assert "sbatch not found" in error and "--dry-run" in error and not (tmp_path / "run").exists()


def test_seeds_dry_run_writes_each_seeds_scripts_and_the_summary_job(tiny_config, tmp_path, capsys):
    """--seeds 0,1 on SLURM: each seed's fold array and aggregation job, then one summary job that pools
    every seed (the worker's --aggregate on the seeds' OUTPUT) once their aggregation jobs have ended."""
    output = tmp_path / "seeds"
    mer_loso(tiny_config, output, *SLURM_OPTIONS, "--seeds", "0,1", "--dry-run")
    out = capsys.readouterr().out
    for seed in (0, 1):
        assert (output / f"seed_{seed}" / "slurm" / "folds.sbatch").is_file()
    summary = output / "slurm" / "seeds_summary.sbatch"
    text = summary.read_text()
    assert f"-m experiments.runner.executors.worker {output.resolve()} --aggregate" in text
    assert "#SBATCH --job-name=mer-seeds-seeds-summary" in text and "#SBATCH --cpus-per-task=1" in text
    assert f"sbatch --dependency=afterany:<their ids, colon-separated> {summary.resolve()}" in out
    assert subprocess.run(["bash", "-n", str(summary)]).returncode == 0


def test_fold_tasks_train_in_fold_groups_by_default_and_the_mode_is_kept(tiny_config, tmp_path, capsys):
    """Without --fold-batch, MEDN's fold tasks get the resolved default (auto) in their worker line and
    run.json; a later launch of the same run keeps that mode."""
    run_dir = tmp_path / "run"
    for _ in range(2):
        mer_main(["loso", "--config", str(tiny_config), "--trainer.max_epochs", "1", "--output", str(run_dir),
                  "--wandb", "disabled", *SLURM_OPTIONS, "--dry-run"])
        assert "--folds-per-task 2 --fold-batch auto" in (run_dir / "slurm" / "folds.sbatch").read_text()
        assert json.loads((run_dir / "run.json").read_text())["fold_batch"] == "auto"


@pytest.mark.slurm
def test_dry_run_prints_the_scripts_and_submits_nothing(on_cluster, tiny_config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    mer_loso(tiny_config, run_dir, *SLURM_OPTIONS, "--dry-run")

    printed = capsys.readouterr().out
    folds_script, aggregate_script = run_dir / "slurm" / "folds.sbatch", run_dir / "slurm" / "aggregate.sbatch"
    assert folds_script.read_text() in printed and aggregate_script.read_text() in printed
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --signal=USR1@90", "#SBATCH --requeue", "#SBATCH --open-mode=append",
                 "#SBATCH --cpus-per-task=1", "#SBATCH --time=00:15:00", f"#SBATCH --output={run_dir}/slurm/folds-%A_%a.out",
                 "srun --export=ALL --ntasks=1 --cpus-per-task=1", f"-m experiments.runner.executors.worker {run_dir} \\\n",
                 '--task-index "$SLURM_ARRAY_TASK_ID" --folds-per-task 2 --max-requeues 3\n'):
        assert line in folds_script.read_text(), line
    assert "--mem" not in folds_script.read_text() and "--account" not in folds_script.read_text()  # cluster defaults
    aggregate_text = aggregate_script.read_text()
    assert f"-m experiments.runner.executors.worker {run_dir} --aggregate" in aggregate_text
    assert "#SBATCH --time=00:30:00" in aggregate_text and "--partition" not in aggregate_text and "gpu" not in aggregate_text
    assert f"sbatch --dependency=afterany:${{array%%;*}} {aggregate_script}" in printed

    assert on_cluster.run("squeue", "-h") == ""  # nothing submitted
    created = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    assert created == ["config.yaml", "fold_plan.json", "folds", "run.json", "slurm", "slurm/aggregate.sbatch",
                       "slurm/folds.sbatch"]
    for script in (folds_script, aggregate_script):  # real SLURM accepts both as they are (--test-only queues nothing)
        assert "to start at" in on_cluster.run("sbatch", "--test-only", str(script), stream="stderr")
    assert on_cluster.run("squeue", "-h") == ""


def interrupt_second_fold(cluster: SlurmCluster, run_dir: Path, task: str, first: int, second: int,
                          interrupt: Callable[[], None]) -> None:
    """Once `task` has finished fold `first` and saved an epoch of fold `second`, interrupt it; then let
    the requeued task start again at once (it waits on its BeginTime otherwise)."""
    folds = run_dir / "folds"

    def training_second_fold() -> bool:
        return ((folds / f"fold_{first:03d}.csv").is_file() and (folds / f"fold_{second:03d}" / "last.ckpt").is_file()
                and cluster.job(task)["JobState"] == "RUNNING")

    cluster.wait_for(f"{task} to train fold {second}", training_second_fold, timeout=150, every=0.2)
    interrupt()
    assert not (folds / f"fold_{second:03d}.csv").exists(), f"fold {second} finished before it was interrupted"
    cluster.wait_for(f"{task} to be requeued", lambda: cluster.job(task)["JobState"] == "PENDING", timeout=60, every=0.5)
    cluster.start_now(task)


@pytest.mark.slurm
def test_interrupted_array_tasks_resume_and_pool_like_a_local_run(on_cluster, tiny_config, tmp_path):
    mer_loso(tiny_config, tmp_path / "local")  # the uninterrupted reference, same config and threads

    run_dir = tmp_path / "slurm"
    mer_loso(tiny_config, run_dir, *SLURM_OPTIONS)
    jobs = dict(line.split() for line in on_cluster.run("squeue", "-h", "-o", "%j %F").splitlines())
    array_id, aggregate_id = jobs["mer-slurm"], jobs["mer-slurm-aggregate"]
    task0, task1 = f"{array_id}_0", f"{array_id}_1"  # folds 0-1 and 2-3

    interrupt_second_fold(on_cluster, run_dir, task0, 0, 1, lambda: on_cluster.run("scontrol", "requeue", task0))
    interrupt_second_fold(on_cluster, run_dir, task1, 2, 3,
                          lambda: on_cluster.run("scancel", "--signal=USR1", task1))

    def aggregation_ended() -> str | None:
        state = on_cluster.job(aggregate_id)["JobState"]
        return state if state in TERMINAL else None

    assert on_cluster.wait_for("the aggregation job", aggregation_ended, timeout=240) == "COMPLETED", job_logs(run_dir)
    for task in (task0, task1):
        job = on_cluster.job(task)
        assert (job["JobState"], job["Restarts"]) == ("COMPLETED", "1"), f"{task}: {job}\n{job_logs(run_dir)}"

    for fold in (1, 3):  # the interrupted folds resumed from an epoch-end checkpoint, not from scratch
        versions = sorted((run_dir / "folds" / f"fold_{fold:03d}" / "logs").glob("version_*/metrics.csv"))
        assert len(versions) == 2, versions
        assert pd.read_csv(versions[1])["epoch"].min() >= 1

    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads((tmp_path / "local" / "metrics.json").read_text())
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "predictions.csv"),
                                  pd.read_csv(tmp_path / "local" / "predictions.csv"), check_exact=True)


# Imported first by every Python of a job step whose PYTHONPATH starts with its folder: one line of what
# that process sees (a --setup export, the step, the GPUs), without importing anything of the suite.
SETUP_PROBE = """import os, sys
print(f"setup-probe: MER_SETUP_PROBE={os.environ.get('MER_SETUP_PROBE')} step={os.environ.get('SLURM_STEP_ID')} "
      f"gpus={os.environ.get('CUDA_VISIBLE_DEVICES')}", file=sys.stderr, flush=True)
"""


def submitted_jobs(cluster: SlurmCluster) -> dict[str, str]:
    """Job name -> job id of the jobs in the queue (an array by its array id)."""
    return dict(line.split() for line in cluster.run("squeue", "-h", "-o", "%j %F").splitlines())


def cancel_and_wait(cluster: SlurmCluster, *job_ids: str) -> None:
    cluster.run("scancel", *job_ids)
    cluster.wait_for("the cancelled jobs to end", lambda: not cluster.run("squeue", "-h"), timeout=60)


@pytest.mark.slurm
def test_cluster_options_setup_lines_and_step_gpus_reach_the_tasks(on_cluster, tiny_config, tmp_path):
    """One launch on the fake-GPU cluster (4 GPUs): two tasks of --gpus-per-task 2 at once. Every option
    reaches the job SLURM runs (scontrol), the --setup exports reach the Python of the job step although
    --export=NONE keeps the submitting shell's environment out, each worker spreads its folds over the
    2 GPUs its step was given, the tasks' GPUs differ, and the aggregation job has its own partition,
    time and memory and no GPU. The tasks are cancelled once they have reported (nothing GPU runs)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(SETUP_PROBE)
    run_dir = tmp_path / "run"
    mer_loso(tiny_config, run_dir, "--launcher", "slurm", "--cpus-per-task", "1", "--folds-per-task", "2",
             "--gpus-per-task", "2", "--partition", "debug", "--mem", "100M", "--constraint", FEATURE,
             "--account", "mer-account", "--qos", "normal",
             "--sbatch-option", "comment=mer-extra-line", "--sbatch-option", "export=NONE",
             "--setup", f'export PYTHONPATH={probe}:"$PYTHONPATH"', "--setup", "export MER_SETUP_PROBE=seen",
             "--aggregate-partition", "cpu", "--aggregate-time", "00:05:00", "--aggregate-mem", "50M")
    assert "#SBATCH --qos=normal" in (run_dir / "slurm" / "folds.sbatch").read_text()  # accepted; no QOS table here
    jobs = submitted_jobs(on_cluster)
    array_id, aggregate_id = jobs["mer-run"], jobs["mer-run-aggregate"]
    logs = [run_dir / "slurm" / f"folds-{array_id}_{i}.out" for i in (0, 1)]

    def reported(log: Path) -> bool:
        text = log.read_text() if log.is_file() else ""
        return "setup-probe:" in text and "worker: folds" in text

    try:
        on_cluster.wait_for("both tasks' workers to report", lambda: all(map(reported, logs)), timeout=120)
        given = []
        for i, log in enumerate(logs):
            job = on_cluster.job(f"{array_id}_{i}", details=True)
            assert (job["Comment"], job["MinMemoryNode"], job["Features"], job["Account"], job["Partition"],
                    job["TresPerTask"]) == ("mer-extra-line", "100M", FEATURE, "mer-account", "debug", "gres:gpu:2"), job
            gpus = gres_indices(job["GRES"])
            lines = log.read_text().splitlines()
            assert f"worker: folds {2 * i}-{2 * i + 1} of {run_dir.resolve()}, GPUs {','.join(map(str, gpus))}, " \
                   "requeued 0 time(s)" in lines, log.read_text()
            probes = [line for line in lines if line.startswith("setup-probe:")]
            assert f"setup-probe: MER_SETUP_PROBE=seen step=0 gpus={','.join(map(str, gpus))}" in probes, probes
            given.append(gpus)
        assert len(given[0]) == len(given[1]) == 2 and not set(given[0]) & set(given[1]), given

        aggregate = on_cluster.job(aggregate_id)
        assert (aggregate["Partition"], aggregate["TimeLimit"], aggregate["MinMemoryNode"], aggregate["NumCPUs"],
                aggregate["Account"]) == ("cpu", "00:05:00", "50M", "1", "mer-account"), aggregate
        assert "TresPerTask" not in aggregate and aggregate.get("Comment") != "mer-extra-line", aggregate
    finally:
        cancel_and_wait(on_cluster, array_id, aggregate_id)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_fold_that_cannot_finish_within_the_time_limit_fails_after_max_requeues(on_cluster, tiny_config, tmp_path):
    """--time 1 (minute) for a fold of 100000 epochs (as for an epoch longer than the time limit): SLURM's
    USR1 requeues the task every attempt (Lightning's handler during fit, the worker's before and between
    Trainers); after --max-requeues 1 the third start fails at once with one line naming the fold and
    what to change, instead of requeueing forever."""
    run_dir = tmp_path / "run"
    mer_main(["loso", "--config", str(tiny_config), "--trainer.max_epochs", "100000", "--output", str(run_dir),
              "--folds", "0", "--threads-per-fold", "1", "--wandb", "disabled", "--launcher", "slurm",
              "--cpus-per-task", "1", "--time", "1", "--max-requeues", "1"])
    jobs = submitted_jobs(on_cluster)
    task, aggregate_id = f"{jobs['mer-run']}_0", jobs["mer-run-aggregate"]

    def task_ended() -> dict[str, str] | None:
        job = on_cluster.job(task)
        if job["JobState"] == "PENDING" and job["Restarts"] != "0":  # requeued: start again now, not in 2 min
            on_cluster.start_now(task)
        return job if job["JobState"] in TERMINAL else None

    try:
        job = on_cluster.wait_for(f"{task} to end", task_ended, timeout=300)
    finally:
        cancel_and_wait(on_cluster, jobs["mer-run"], aggregate_id)
    log = (run_dir / "slurm" / f"folds-{jobs['mer-run']}_0.out").read_text()
    assert (job["JobState"], job["Restarts"]) == ("FAILED", "2"), f"{job}\n{log}"
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, log
    assert "fold 0 (subject" in errors[0] and "after 2 requeues (--max-requeues 1;" in errors[0], errors
    assert "longer --time" in errors[0] and "fewer --folds-per-task" in errors[0], errors
    assert not (run_dir / "folds" / "fold_000.csv").exists()
