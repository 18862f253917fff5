"""``mer sweep --launcher slurm`` on the real single-node SLURM of tests/helpers/slurm_cluster.py: a 2-point grid
(λ_au ∈ {0, 1}, λ_orth = 1) pulled by an array of 2 worker tasks, then the summary job (afterany)
writes the table and the plot."""

from __future__ import annotations

import pandas as pd
import pytest

from experiments.main import mer_main
from tests.helpers.slurm_cluster import TERMINAL, job_logs
from tests.experiments.test_sweep import write_spec


@pytest.mark.slurm
@pytest.mark.slow
def test_worker_array_finishes_the_grid_and_the_summary_job_plots_it(on_cluster, tiny_config, tmp_path):
    spec = write_spec(tmp_path / "grid.yaml", tiny_config, parameters={
        "model.init_args.lambda_au": {"values": [0.0, 1.0]}, "model.init_args.lambda_orth": {"value": 1.0}})
    output = tmp_path / "sweep"
    mer_main(["sweep", str(spec), "--output", str(output), "--launcher", "slurm", "--parallel", "2",
              "--cpus-per-task", "1", "--time", "00:15:00", "--wandb", "disabled"])
    for script in ("workers.sbatch", "summary.sbatch"):
        assert "to start at" in on_cluster.run("sbatch", "--test-only", str(output / "slurm" / script), stream="stderr")
    jobs = dict(line.split() for line in on_cluster.run("squeue", "-h", "-o", "%j %F").splitlines())
    summary_id = jobs["mer-sweep-summary"]

    def summary_ended() -> str | None:
        state = on_cluster.job(summary_id)["JobState"]
        return state if state in TERMINAL else None

    assert on_cluster.wait_for("the summary job", summary_ended, timeout=400) == "COMPLETED", job_logs(output)
    table = pd.read_csv(output / "trials.csv")
    assert list(table["state"]) == ["COMPLETE", "COMPLETE"], job_logs(output)
    assert sorted(zip(table["lambda_au"], table["lambda_orth"])) == [(0.0, 1.0), (1.0, 1.0)]
    assert all((output / d / "metrics.json").is_file() for d in table["run_dir"])
    assert (output / "figure6_lambda_au.png").is_file() and not (output / "heatmap.png").exists()  # a 1-D study
