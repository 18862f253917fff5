"""A SLURM task's requeues: answering the requeue signal at any moment, and counting restarts.

SLURM sends ``--signal=USR1@90`` up to 30 s earlier than asked (it checks time limits every 30 s), so
a task with a short time limit can get it while its worker still imports: :func:`requeue_on_usr1`
is installed first thing (this module imports nothing heavy) and requeues the task as Lightning's
handler would; while a Trainer runs, Lightning's own handler answers instead (it also saves a
checkpoint; ``jobs.trainer_calls.lightning_answers_requeue``). :func:`restarts` is how often the task
was requeued (``SLURM_RESTART_COUNT``), which the workers compare with ``--max-requeues`` so that a
task that never finishes within its time limit ends instead of requeueing forever.
"""

from __future__ import annotations

import os
import signal
import subprocess


def in_slurm_job() -> bool:
    return "SLURM_JOB_ID" in os.environ


def task_id() -> str:
    """The job id ``scontrol requeue`` takes: ``<array>_<task>`` for an array task."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]


def requeue_on_usr1() -> None:
    """Inside a SLURM job, USR1 requeues the task (SLURM then stops this one)."""
    if not in_slurm_job():
        return

    def requeue(signum: int, frame: object) -> None:
        subprocess.run(["scontrol", "requeue", task_id()], check=False)

    signal.signal(signal.SIGUSR1, requeue)


def restarts() -> int:
    """How often SLURM requeued this task so far (0 outside SLURM and on the first start)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
