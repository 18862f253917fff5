"""``mer loso --launcher slurm``: the planned folds as one sbatch job array, then one aggregation job.

Array task ``i`` runs the fold worker on chunk ``i`` of the run's selected folds (``folds_per_task``
folds; with several GPUs the worker spreads them over the task's devices). ``--signal=USR1@90`` lets
Lightning's ``SLURMEnvironment(auto_requeue=True)`` save a checkpoint and requeue the task before its
time limit; ``--requeue`` lets a preempted task be requeued as well, and a requeued fold continues
from its own last epoch-end checkpoint; a task requeued more than ``--max-requeues`` times fails with
one line instead (``executors.requeue``). ``--open-mode=append`` keeps one log per task across
restarts. The aggregation job (its own partition, time and memory: ``--aggregate-*``, one CPU, no GPU)
waits ``afterany`` on the whole array, so it also runs when folds failed, and then names them. Every
script runs the ``--setup`` lines before its step; ``--account``/``--qos`` go to every job, the other
resources and ``--sbatch-option`` lines to the array.

The scripts are plain sbatch files in ``RUN_DIR/slurm/`` (the task logs go there too), written and
printed also by ``--dry-run``, which submits nothing, so users can read, adapt and submit them.
"""

from __future__ import annotations

import math
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import experiments
from datamodules.errors import MERError

from ...atomic_files import atomic_write_text
from ..fold_selection import format_folds
from ..options import LosoOptions, SlurmOptions

SLURM_DIR = "slurm"
FOLDS_SCRIPT = "folds.sbatch"
AGGREGATE_SCRIPT = "aggregate.sbatch"
SEEDS_SUMMARY_SCRIPT = "seeds_summary.sbatch"
USR1_GUARD = "usr1-ignored-until-answered"  # $0 of the step's `bash -c`: names what it is for in ps and logs
REQUEUE_SIGNAL_S = 90  # our choice: Lightning's checkpoint of a fold takes seconds; SLURM may signal 30 s earlier
REPO_ROOT = Path(experiments.__file__).resolve().parents[1]


def n_tasks(n_folds: int, folds_per_task: int) -> int:
    return math.ceil(n_folds / folds_per_task)


def _directives(folder: Path, options: SlurmOptions, job_name: str, log_name: str, resources: dict[str, Any]) -> list[str]:
    """The #SBATCH lines of every script: name, log, account and QOS around the job's `resources`
    (None-valued options are left to the cluster's defaults)."""
    values = {
        "job-name": job_name,
        **resources,
        "account": options.account,
        "qos": options.qos,
        "chdir": Path.cwd(),
        "output": folder / SLURM_DIR / log_name,
        "open-mode": "append",
    }
    return [f"#SBATCH --{key}={shlex.quote(str(value))}" for key, value in values.items() if value is not None]


def _worker(run_dir: Path, *args: str) -> str:
    return shlex.join([sys.executable, "-m", "experiments.runner.executors.worker", str(run_dir), *args])


def _job_environment(options: SlurmOptions) -> list[str]:
    """Make the suite importable wherever the job starts (a clone that is not pip-installed); the job
    starts its own wandb service (sbatch exports the submitting shell's ``WANDB_SERVICE``, a socket of
    the submitting machine); then the user's ``--setup`` lines."""
    setup = ["# set-up lines (--setup)", *options.setup] if options.setup else []
    return [f'export PYTHONPATH={shlex.quote(str(REPO_ROOT))}"${{PYTHONPATH:+:$PYTHONPATH}}"', "unset WANDB_SERVICE", *setup]


def array_script(folder: Path, options: SlurmOptions, comments: list[str], log_name: str, tasks: int, command: str) -> str:
    """An sbatch array of `tasks` requeueable tasks (``options``' resources and ``--sbatch-option`` lines),
    each running `command` as one srun step with ``$SLURM_ARRAY_TASK_ID`` set; `comments` head the script."""
    parallel = f"%{options.array_parallelism}" if options.array_parallelism else ""
    resources = {"partition": options.partition, "time": options.time, "ntasks": 1, "cpus-per-task": options.cpus_per_task,
                 "gpus-per-task": options.gpus_per_task or None, "mem": options.mem, "constraint": options.constraint}
    lines = [
        "#!/bin/bash",
        *(f"# {line}" for line in comments),
        *_directives(folder, options, _job_name(folder), log_name, resources),
        f"#SBATCH --array=0-{tasks - 1}{parallel}",
        f"#SBATCH --signal=USR1@{REQUEUE_SIGNAL_S}",
        "#SBATCH --requeue",
        *options.sbatch_lines(),
        *_job_environment(options),
        # srun makes the task a job step (the one signals and GPUs are given to); Slurm 22.05's srun needs
        # its CPUs restated; --export=ALL: the step gets this script's environment also under --export=NONE.
        # USR1 is ignored until the worker answers it (a short task can get it while Python starts).
        f"srun --export=ALL --ntasks=1 --cpus-per-task={options.cpus_per_task} \\\n"
        f"    bash -c 'trap \"\" USR1; exec \"$@\"' {USR1_GUARD} \\\n    {command}",
    ]
    return "\n".join(lines) + "\n"


def follow_up_script(folder: Path, options: SlurmOptions, comments: list[str], name: str, command: str) -> str:
    """A one-CPU job (``--aggregate-partition``/``--aggregate-time``/``--aggregate-mem``, no GPU) that
    runs `command` once the array it follows has ended."""
    resources = {"partition": options.aggregate_partition, "time": options.aggregate_time, "ntasks": 1,
                 "cpus-per-task": 1, "mem": options.aggregate_mem}
    lines = [
        "#!/bin/bash",
        *(f"# {line}" for line in comments),
        *_directives(folder, options, f"{_job_name(folder)}-{name}", f"{name}-%j.out", resources),
        *_job_environment(options),
        command,
    ]
    return "\n".join(lines) + "\n"


def requeue_comments(options: SlurmOptions) -> list[str]:
    return [f"USR1 {REQUEUE_SIGNAL_S} s before the time limit: Lightning checkpoints and requeues the task; a task",
            f"requeued (time limit or preemption) more than {options.max_requeues} times (--max-requeues) fails instead."]


def folds_script(run_dir: Path, folds: list[int], options: LosoOptions) -> str:
    """The array script: one task per chunk of ``--folds-per-task`` folds."""
    slurm = options.slurm
    # The task's GPUs are read inside its job step (what SLURM gives the step), not in this script.
    gpus = f" --step-gpus --folds-per-device {options.local.folds_per_device}" if slurm.gpus_per_task else ""
    if options.batching.size is not None:  # the task's chunk of folds is trained in fold groups
        gpus += f" --fold-batch {shlex.quote(options.batching.fold_batch)}"
    comments = [f"mer loso fold tasks: folds {format_folds(folds)} of {run_dir}, {slurm.folds_per_task} per array task.",
                *requeue_comments(slurm), "A requeued fold continues from its own last epoch-end checkpoint."]
    command = (f"{_worker(run_dir)} \\\n"
               f'    --task-index "$SLURM_ARRAY_TASK_ID" --folds-per-task {slurm.folds_per_task}{gpus} '
               f"--max-requeues {slurm.max_requeues}")
    return array_script(run_dir, slurm, comments, "folds-%A_%a.out", n_tasks(len(folds), slurm.folds_per_task), command)


def aggregate_script(run_dir: Path, options: SlurmOptions) -> str:
    """The pooling job, submitted to start once every array task has ended (``afterany``)."""
    comments = [f"mer loso pooling of {run_dir} once every fold task has ended:",
                "predictions.csv, metrics.json, confusion_matrix.png, or the names of the folds still missing.",
                f"Pool again by hand: mer loso --aggregate-only {run_dir}"]
    return follow_up_script(run_dir, options, comments, "aggregate", _worker(run_dir, "--aggregate"))


def _job_name(run_dir: Path) -> str:
    return "mer-" + (re.sub(r"[^A-Za-z0-9_.-]", "_", run_dir.name) or "loso")


def write_scripts(directory: Path, scripts: dict[str, str], dry_run: bool) -> list[Path]:
    """Write the job scripts {name: text} into `directory` (atomically) and their paths; with `dry_run`
    each is also printed."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in scripts.items():
        atomic_write_text(directory / name, text)
        if dry_run:
            print(f"# ---- {directory / name}\n{text}")
        paths.append(directory / name)
    return paths


def submit_array_then(directory: Path, array: tuple[str, str], follow_up: tuple[str, str], dry_run: bool,
                      if_refused: str) -> tuple[str, str] | None:
    """Write an array script and its follow-up job's script (name, text) into `directory` and submit
    them, the follow-up held until every array task has ended (``afterany``); their job ids.

    With `dry_run` the scripts and the commands that submit them are printed instead and None is
    returned. `if_refused` tells the user what to do when the array is in but the follow-up refused."""
    array_path, follow_up_path = write_scripts(directory, dict([array, follow_up]), dry_run)
    if dry_run:
        print(f"# dry run: nothing submitted. Submit these scripts (as printed or after editing) with:\n"
              f"array=$(sbatch --parsable {shlex.quote(str(array_path))}) && "
              f"sbatch --dependency=afterany:${{array%%;*}} {shlex.quote(str(follow_up_path))}")
        return None
    array_id = _sbatch(array_path)
    try:
        return array_id, _sbatch(follow_up_path, f"--dependency=afterany:{array_id}")
    except MERError as err:
        raise MERError(f"array {array_id} is submitted but {follow_up_path.name} was refused ({err}); {if_refused}") from None


def launch(run_dir: Path, folds: list[int], options: LosoOptions) -> list[str]:
    """Write the sbatch scripts into RUN_DIR/slurm/ and submit them; returns [array id, aggregation id].

    `folds` are the run's selected folds in run.json's order (array task i runs chunk i of them).
    With ``--dry-run`` the scripts are written and printed with the commands that submit them,
    nothing is submitted and [] is returned.
    """
    slurm = options.slurm
    slurm.check()
    if not folds:
        raise MERError(f"no folds to launch for {run_dir}")
    run_dir = run_dir.resolve()
    ids = submit_array_then(run_dir / SLURM_DIR, (FOLDS_SCRIPT, folds_script(run_dir, folds, options)),
                            (AGGREGATE_SCRIPT, aggregate_script(run_dir, slurm)), slurm.dry_run,
                            if_refused=f"pool the folds once they end with: mer loso --aggregate-only {run_dir}")
    if ids is None:
        return []
    array_id, aggregate_id = ids
    tasks = n_tasks(len(folds), slurm.folds_per_task)
    print(f"submitted fold array {array_id} ({tasks} task(s), {slurm.folds_per_task} fold(s) each) and "
          f"aggregation job {aggregate_id} (starts when every task has ended); logs in {run_dir / SLURM_DIR}/; "
          f"watch with: squeue -j {array_id},{aggregate_id}")
    return [array_id, aggregate_id]


def launch_seeds_summary(output: Path, aggregation_ids: list[str], options: SlurmOptions) -> str | None:
    """``--seeds`` on SLURM: OUTPUT/slurm/seeds_summary.sbatch, held until every seed's aggregation job
    has ended (``afterany``), pools the seeds again and writes their mean ± std; its job id (None with
    ``--dry-run``: printed with the command that submits it)."""
    output = output.resolve()
    comments = [f"mer loso --seeds summary of {output} once every seed's aggregation job has ended:",
                "seeds_summary.json and .png, or the seeds still missing.",
                f"Summarise again by hand: mer loso --aggregate-only {output}"]
    text = follow_up_script(output, options, comments, "seeds-summary", _worker(output, "--aggregate"))
    (script,) = write_scripts(output / SLURM_DIR, {SEEDS_SUMMARY_SCRIPT: text}, options.dry_run)
    if options.dry_run:
        print(f"# dry run: submit it once the seeds' aggregation jobs are submitted with: "
              f"sbatch --dependency=afterany:<their ids, colon-separated> {shlex.quote(str(script))}")
        return None
    summary = _sbatch(script, f"--dependency=afterany:{':'.join(aggregation_ids)}")
    print(f"submitted the seeds summary job {summary} (starts when every seed's aggregation job has ended)")
    return summary


def _sbatch(script: Path, *options: str) -> str:
    """Submit one script; its job id (sbatch --parsable prints 'id' or 'id;cluster')."""
    done = subprocess.run(["sbatch", "--parsable", *options, str(script)], capture_output=True, text=True)
    if done.returncode:
        reason = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise MERError(f"sbatch {script} failed: {reason}")
    return done.stdout.strip().split(";")[0]
