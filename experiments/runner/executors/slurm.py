"""``mer loso --launcher slurm``: the planned folds as one sbatch job array, then one aggregation job.

Array task ``i`` runs the fold worker on chunk ``i`` of the run's selected folds (``folds_per_task``
folds; with several GPUs the worker spreads them over the task's devices). ``--signal=USR1@90`` lets
Lightning's ``SLURMEnvironment(auto_requeue=True)`` save a checkpoint and requeue the task before its
time limit; ``--requeue`` lets a preempted task be requeued as well, and a requeued fold continues
from its own last checkpoint. ``--open-mode=append`` keeps one log per task across restarts. The
aggregation job waits ``afterany`` on the whole array, so it also runs when folds failed, and then
names them.

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

import experiments
from datamodules.errors import MERError

from ...atomic_files import atomic_write_text
from ..fold_selection import format_folds
from ..options import LosoOptions, SlurmOptions

SLURM_DIR = "slurm"
FOLDS_SCRIPT = "folds.sbatch"
AGGREGATE_SCRIPT = "aggregate.sbatch"
SEEDS_SUMMARY_SCRIPT = "seeds_summary.sbatch"
AGGREGATE_TIME = "00:30:00"  # our choice: pooling reads the fold CSVs and plots once, minutes at most
REPO_ROOT = Path(experiments.__file__).resolve().parents[1]


def n_tasks(n_folds: int, folds_per_task: int) -> int:
    return math.ceil(n_folds / folds_per_task)


def _directives(run_dir: Path, options: SlurmOptions, job_name: str, log_name: str, time: str, cpus: int) -> list[str]:
    """The #SBATCH lines both scripts share (None-valued options are left to the cluster's defaults)."""
    values = {
        "job-name": job_name,
        "partition": options.partition,
        "time": time,
        "ntasks": 1,
        "cpus-per-task": cpus,
        "chdir": Path.cwd(),
        "output": run_dir / SLURM_DIR / log_name,
        "open-mode": "append",
    }
    return [f"#SBATCH --{key}={shlex.quote(str(value))}" for key, value in values.items() if value is not None]


def _worker(run_dir: Path, *args: str) -> str:
    return shlex.join([sys.executable, "-m", "experiments.runner.executors.worker", str(run_dir), *args])


def _job_environment() -> list[str]:
    """Make the suite importable wherever the job starts (a clone that is not pip-installed); the job
    starts its own wandb service (sbatch exports the submitting shell's ``WANDB_SERVICE``, a socket of
    the submitting machine)."""
    return [f'export PYTHONPATH={shlex.quote(str(REPO_ROOT))}"${{PYTHONPATH:+:$PYTHONPATH}}"', "unset WANDB_SERVICE"]


def array_script(folder: Path, options: SlurmOptions, comments: list[str], log_name: str, tasks: int,
                 extra_directives: list[str], command: str) -> str:
    """An sbatch array of `tasks` tasks (``options``' resources), each running `command` as one srun step
    with ``$SLURM_ARRAY_TASK_ID`` set; `comments` head the script."""
    parallel = f"%{options.array_parallelism}" if options.array_parallelism else ""
    lines = [
        "#!/bin/bash",
        *(f"# {line}" for line in comments),
        *_directives(folder, options, _job_name(folder), log_name, options.time, options.cpus_per_task),
        f"#SBATCH --array=0-{tasks - 1}{parallel}",
        *([f"#SBATCH --gpus-per-task={options.gpus_per_task}"] if options.gpus_per_task else []),
        *extra_directives,
        *_job_environment(),
        # srun makes the task a job step (the one signals reach); Slurm 22.05's srun needs its CPUs restated.
        f"srun --ntasks=1 --cpus-per-task={options.cpus_per_task} \\\n    {command}",
    ]
    return "\n".join(lines) + "\n"


def follow_up_script(folder: Path, options: SlurmOptions, comments: list[str], name: str, command: str) -> str:
    """A one-CPU job (``AGGREGATE_TIME``) that runs `command` once the array it follows has ended."""
    lines = [
        "#!/bin/bash",
        *(f"# {line}" for line in comments),
        *_directives(folder, options, f"{_job_name(folder)}-{name}", f"{name}-%j.out", AGGREGATE_TIME, 1),
        *_job_environment(),
        command,
    ]
    return "\n".join(lines) + "\n"


def folds_script(run_dir: Path, folds: list[int], options: LosoOptions) -> str:
    """The array script: one task per chunk of ``--folds-per-task`` folds."""
    slurm = options.slurm
    # The task's GPUs are those SLURM lists in CUDA_VISIBLE_DEVICES (expanded when the task starts).
    gpus = f' --devices "$CUDA_VISIBLE_DEVICES" --folds-per-device {options.local.folds_per_device}' if slurm.gpus_per_task else ""
    if options.batching.size is not None:  # the task's chunk of folds is trained in fold groups
        gpus += f" --fold-batch {shlex.quote(options.batching.fold_batch)}"
    comments = [f"mer loso fold tasks: folds {format_folds(folds)} of {run_dir}, {slurm.folds_per_task} per array task.",
                "USR1 90 s before the time limit: Lightning checkpoints and requeues the task; a requeued",
                "or preempted fold continues from its own last checkpoint."]
    command = (f"{_worker(run_dir)} \\\n"
               f'    --task-index "$SLURM_ARRAY_TASK_ID" --folds-per-task {slurm.folds_per_task}{gpus}')
    return array_script(run_dir, slurm, comments, "folds-%A_%a.out", n_tasks(len(folds), slurm.folds_per_task),
                        ["#SBATCH --signal=USR1@90", "#SBATCH --requeue"], command)


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
