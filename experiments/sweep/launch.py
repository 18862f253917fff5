"""Starting a sweep's workers: local processes (one per GPU with --devices), or a SLURM array of
worker tasks plus a summary job that runs once every task has ended (``afterany``)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna

from ..runner.executors.slurm import REPO_ROOT, array_script, follow_up_script, requeue_comments, submit_array_then
from ..runner.slurm_options import SlurmOptions

LOGS = "logs"
SLURM_DIR = "slurm"
WORKERS_SCRIPT = "workers.sbatch"
SUMMARY_SCRIPT = "summary.sbatch"
POLL_S = 2.0


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def worker_command(output: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "experiments.sweep.worker", str(output), *args]


def run_local_workers(output: Path, study: optuna.Study, n: int, devices: list[str] | None) -> list[int]:
    """`n` worker processes (logs in OUTPUT/logs/), progress printed as the trials change state;
    returns their exit codes. Ctrl-C stops them (SIGTERM by pid: their trials are queued again)."""
    (output / LOGS).mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    workers = []
    for i in range(n):
        with open(output / LOGS / f"worker-{i}.log", "a") as log:
            workers.append(subprocess.Popen(worker_command(output, "--index", str(i)), stdout=log, stderr=subprocess.STDOUT,
                                            env={**env, **({"CUDA_VISIBLE_DEVICES": devices[i]} if devices else {})}))
    print(f"{n} worker(s) started (pids {', '.join(str(w.pid) for w in workers)}); logs in {output / LOGS}/", flush=True)
    shown, reported = "", set()
    signal.signal(signal.SIGTERM, interrupt)  # stopped like Ctrl-C: the workers are stopped too
    try:
        while None in [w.poll() for w in workers]:
            time.sleep(POLL_S)
            counts = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
            line = "trials: " + (", ".join(f"{count} {state}" for state, count in sorted(counts.items())) or "none yet")
            if line != shown:
                print(line, flush=True)
                shown = line
            for i, worker in enumerate(workers):
                if worker.returncode not in (None, 0) and i not in reported:
                    reported.add(i)
                    lost = "; its running trial is retried after the grace period" if worker.returncode < 0 else ""
                    print(f"worker {i} (pid {worker.pid}) exited with code {worker.returncode}, see "
                          f"{output / LOGS}/worker-{i}.log{lost}", flush=True)
    except KeyboardInterrupt:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in workers:
            worker.wait()
        raise
    return [w.returncode for w in workers]


def workers_script(output: Path, n: int, options: SlurmOptions) -> str:
    comments = [f"mer sweep workers: {n} array task(s) pull trials of the study in {output} until it is done;",
                "a task that dies leaves its trial to the others (retried after the heartbeat grace period).",
                *requeue_comments(options), "A requeued or preempted task's trial is queued again and resumes its LOSO run."]
    command = f'{shlex.join(worker_command(output))} --index "$SLURM_ARRAY_TASK_ID" --max-requeues {options.max_requeues}'
    return array_script(output, options, comments, "worker-%A_%a.out", n, command)


def summary_script(output: Path, options: SlurmOptions) -> str:
    comments = [f"mer sweep summary of {output} once every worker task has ended: trials.csv, figure6.png, heatmap.png"]
    return follow_up_script(output, options, comments, "summary", shlex.join(worker_command(output, "--summary")))


def launch_slurm(output: Path, n: int, options: SlurmOptions) -> None:
    """Write OUTPUT/slurm/{workers,summary}.sbatch and submit them (``--dry-run``: print them only);
    `options` passed ``SlurmOptions.check``."""
    output = output.resolve()
    ids = submit_array_then(output / SLURM_DIR, (WORKERS_SCRIPT, workers_script(output, n, options)),
                            (SUMMARY_SCRIPT, summary_script(output, options)), options.dry_run,
                            if_refused=f"summarise the sweep once its workers end with: {shlex.join(worker_command(output, '--summary'))}")
    if ids is None:
        return
    array, summary = ids
    print(f"submitted worker array {array} ({n} task(s)) and summary job {summary}; logs in {output / SLURM_DIR}/; "
          f"watch with: squeue -j {array},{summary}")
