"""``mer sweep --launcher slurm`` on the real single-node SLURM of tests/helpers/slurm_cluster.py: a 2-point grid
(λ_au ∈ {0, 1}, λ_orth = 1) pulled by an array of 2 worker tasks, then the summary job (afterany)
writes the table and the plot. Worker task 0 is requeued while its trial trains (as a preemption
would): its trial is queued again and its LOSO run resumes from the interrupted fold's epoch checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from experiments.main import mer_main
from tests.experiments.test_sweep import write_spec
from tests.helpers.slurm_cluster import TERMINAL, job_logs


@pytest.mark.slurm
@pytest.mark.slow
def test_worker_array_finishes_the_grid_after_a_requeue_and_the_summary_job_plots_it(on_cluster, tiny_config, tmp_path):
    spec = write_spec(tmp_path / "grid.yaml", tiny_config, parameters={
        "model.init_args.lambda_au": {"values": [0.0, 1.0]}, "model.init_args.lambda_orth": {"value": 1.0}})
    output = tmp_path / "sweep"
    mer_main(["sweep", str(spec), "--trainer.max_epochs", "4", "--output", str(output), "--launcher", "slurm",
              "--parallel", "2", "--cpus-per-task", "1", "--time", "00:15:00", "--wandb", "disabled",
              "--heartbeat", "2", "--grace-period", "10", "--sbatch-option", "comment=mer-sweep",
              "--setup", "export MER_SWEEP_SETUP=1", "--aggregate-partition", "cpu"])
    workers, summary = (output / "slurm" / name for name in ("workers.sbatch", "summary.sbatch"))
    for line in ("#SBATCH --signal=USR1@90", "#SBATCH --requeue", "#SBATCH --comment=mer-sweep",
                 "export MER_SWEEP_SETUP=1", '--index "$SLURM_ARRAY_TASK_ID" --max-requeues 3'):
        assert line in workers.read_text(), line
    assert "#SBATCH --partition=cpu" in summary.read_text() and "--comment" not in summary.read_text()
    jobs = dict(line.split() for line in on_cluster.run("squeue", "-h", "-o", "%j %F").splitlines())
    task0, summary_id = f"{jobs['mer-sweep']}_0", jobs["mer-sweep-summary"]
    assert on_cluster.job(task0)["Comment"] == "mer-sweep"

    def training_its_trial() -> Path | None:
        """The run folder of task 0's trial once a fold of it has an epoch checkpoint and is not done."""
        log = output / "slurm" / f"worker-{task0}.out"
        found = re.search(r"^trial \d+: mer loso .* --output (\S+)", log.read_text() if log.is_file() else "", re.M)
        folds = Path(found[1]) / "folds" if found else None
        training = folds is not None and any(not (folds / f"{ckpt.parent.name}.csv").exists()
                                             for ckpt in folds.glob("fold_*/last.ckpt"))
        return folds if training and on_cluster.job(task0)["JobState"] == "RUNNING" else None

    folds = on_cluster.wait_for(f"{task0} to train a trial", training_its_trial, timeout=300, every=0.2)
    on_cluster.run("scontrol", "requeue", task0)
    on_cluster.wait_for(f"{task0} to be requeued", lambda: on_cluster.job(task0)["JobState"] == "PENDING", timeout=60)
    on_cluster.start_now(task0)

    def summary_ended() -> str | None:
        state = on_cluster.job(summary_id)["JobState"]
        return state if state in TERMINAL else None

    assert on_cluster.wait_for("the summary job", summary_ended, timeout=400) == "COMPLETED", job_logs(output)
    assert on_cluster.job(task0)["Restarts"] == "1"
    table = pd.read_csv(output / "trials.csv")
    complete, failed = table[table["state"] == "COMPLETE"], table[table["state"] == "FAIL"]
    assert len(complete) == 2 and len(failed) == 1, table
    assert list(complete["retry_of"].dropna()) == list(failed["trial"]), table  # the interrupted trial, retried
    assert sorted(zip(complete["lambda_au"], complete["lambda_orth"])) == [(0.0, 1.0), (1.0, 1.0)]
    assert all((output / d / "metrics.json").is_file() for d in complete["run_dir"])
    resumed = [versions for fold in folds.glob("fold_???") if fold.is_dir()
               if len(versions := sorted(fold.glob("logs/version_*/metrics.csv"))) == 2]
    assert len(resumed) == 1 and pd.read_csv(resumed[0][1])["epoch"].min() >= 1, resumed  # from its epoch checkpoint
    assert (output / "figure6_lambda_au.png").is_file() and not (output / "heatmap.png").exists()  # a 1-D study
