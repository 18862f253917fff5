"""Executors on one machine: folds one after another in this process, or in worker processes.

A job is one fold (``job.run_fold``) or, under ``--fold-batch``, a group of folds trained at once
(``fold_batch.run_fold_job``). Worker processes (spawn) each run one job attempt, pinned to a GPU through
``CUDA_VISIBLE_DEVICES`` (K folds at once per GPU) or on CPU (N at once). A fold whose worker
dies or fails is retried once, then reported by name. One progress bar counts folds; its postfix
shows what each worker is doing ('w0: fold 3 ep 2/10 | w1: fold 5 ep 1/10'), as the workers report
it through a queue. Ctrl-C stops every worker (by pid) and is re-raised for the resume line.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import subprocess
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path

from tqdm.auto import tqdm

from datamodules.errors import MERError

from ..lightning_cli import on_slurm
from .folds import FoldPaths, format_folds
from .fold_batch import HOST_WORKERS, job_chunks, parse_fold_batch, run_fold_job, started_groups
from .job import run_fold
from .plan import RunPlan, is_rank_zero, parse_devices

ATTEMPTS = 2  # a crashed fold is retried once


@dataclass
class Slot:
    """One place a fold can run: a name for the progress bar and the environment of its worker."""

    name: str
    env: dict[str, str] = field(default_factory=dict)


def make_slots(devices: str | None, folds_per_device: int, workers: int) -> list[Slot]:
    if devices is not None:
        return [Slot(f"g{d}.{j}" if folds_per_device > 1 else f"g{d}", {"CUDA_VISIBLE_DEVICES": d})
                for d in parse_devices(devices) for j in range(folds_per_device)]
    return [Slot(f"w{i}", {HOST_WORKERS: str(workers)}) for i in range(workers)]


def fold_bar(folds: list[int], done: int) -> tqdm:
    """The progress bar over folds; shown by rank 0 only (a DDP fold's other ranks run the same loop)."""
    return tqdm(total=len(folds), initial=done, desc="folds", unit="fold", dynamic_ncols=True, disable=not is_rank_zero())


def run_job(run_dir: Path, plan: RunPlan, job: list[int], fold_batch: int | None, report=None) -> None:
    """One job: a single fold, or under fold batching a group of folds (``fold_batch`` N, or 0 = auto)."""
    if fold_batch is None:
        (k,) = job
        run_fold(run_dir, k, report=report, plan=plan)
    else:
        run_fold_job(run_dir, job, plan, fold_batch, report=report)


def fold_jobs(run_dir: Path, folds: list[int], fold_batch: int | None, slots: int) -> list[list[int]]:
    """The jobs of the not-yet-done `folds`: one fold each, or under fold batching the groups an earlier
    attempt started (each its own job, so it resumes from its checkpoint), then the rest in groups."""
    todo = [k for k in folds if not FoldPaths(run_dir, k).done()]
    if fold_batch is None:
        return [[k] for k in todo]
    started = started_groups(run_dir, todo)
    taken = {k for group in started for k in group}
    return started + job_chunks([k for k in todo if k not in taken], fold_batch, slots)


def run_sequential(run_dir: Path, plan: RunPlan, folds: list[int], fold_batch: int | None = None) -> None:
    """Every job in this process, one after another."""
    requeue_between_folds()
    jobs = fold_jobs(run_dir, folds, fold_batch, slots=1)
    with fold_bar(folds, len(folds) - sum(map(len, jobs))) as bar:
        for job in jobs:
            run_job(run_dir, plan, job, fold_batch, report=bar.set_postfix_str)
            bar.update(len(job))


def _fold_worker(run_dir: Path, job: list[int], fold_batch: int | None, slot: str, env: dict[str, str],
                 messages: mp.Queue) -> None:
    """Body of a worker process: one job; its traceback goes to its first fold's error.log on failure."""
    os.environ.update(env)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # Lightning installs its requeue handler only over the default
    try:
        run_job(run_dir, RunPlan.load(run_dir), job, fold_batch, report=lambda text: messages.put((slot, text)))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BaseException:
        paths = FoldPaths(run_dir, job[0])
        paths.dir.mkdir(parents=True, exist_ok=True)
        paths.error_log.write_text(traceback.format_exc())
        raise


def run_parallel(run_dir: Path, plan: RunPlan, folds: list[int], slots: list[Slot], fold_batch: int | None = None) -> None:
    """Jobs in worker processes, one per slot at a time; raises MERError naming folds whose job failed twice."""
    context = mp.get_context("spawn")
    messages = context.Queue()
    pending = deque(tuple(job) for job in fold_jobs(run_dir, folds, fold_batch, len(slots)))
    attempts = {job: 0 for job in pending}
    running: dict[str, tuple[BaseProcess, tuple[int, ...]]] = {}
    status: dict[str, str] = {}
    failed: list[str] = []
    survive_requeue_signal()
    with fold_bar(folds, len(folds) - len(pending)) as bar:
        try:
            while pending or running:
                for slot in slots:
                    if slot.name not in running and pending:
                        job = pending.popleft()
                        attempts[job] += 1
                        process = context.Process(target=_fold_worker, args=(run_dir, list(job), fold_batch, slot.name,
                                                                             slot.env, messages),
                                                  name=f"mer-fold-{job[0]}", daemon=False)
                        process.start()
                        running[slot.name] = (process, job)
                        status[slot.name] = f"fold{'s' if len(job) > 1 else ''} {format_folds(list(job))} starting"
                _drain(messages, status, timeout=0.5)
                for name, (process, job) in list(running.items()):
                    if process.exitcode is None:
                        continue
                    process.join()
                    del running[name]
                    status[name] = "idle"
                    done = [k for k in job if FoldPaths(run_dir, k).done()]
                    bar.update(len(done))
                    if len(done) == len(job):
                        continue
                    if attempts[job] < ATTEMPTS:
                        retry = tuple(k for k in job if k not in done)
                        attempts[retry] = attempts[job]
                        pending.appendleft(retry)
                    else:
                        failed.append(f"{', '.join(plan.fold_name(k) for k in job if k not in done)}: worker exit code "
                                      f"{process.exitcode}, see {FoldPaths(run_dir, job[0]).error_log}")
                bar.set_postfix_str(" | ".join(f"{name}: {text}" for name, text in sorted(status.items())), refresh=False)
                bar.refresh()
        except KeyboardInterrupt:
            stop(running)
            raise
    if failed:
        raise MERError(f"{len(failed)} fold(s) failed twice: " + "; ".join(failed))


def _drain(messages: mp.Queue, status: dict[str, str], timeout: float) -> None:
    """Apply the workers' status messages (waits up to `timeout` for the first)."""
    try:
        slot, text = messages.get(timeout=timeout)
        status[slot] = text
        while True:
            slot, text = messages.get_nowait()
            status[slot] = text
    except queue.Empty:
        pass


def stop(running: dict[str, tuple[BaseProcess, tuple[int, ...]]]) -> None:
    """End our own worker processes (each by its pid) and wait for them."""
    for process, _ in running.values():
        if process.exitcode is None:
            process.terminate()
    for process, _ in running.values():
        process.join(timeout=30)
        if process.exitcode is None:
            process.kill()
            process.join()


def requeue_between_folds() -> None:
    """Under SLURM, a USR1 that arrives between two folds (no Trainer, so no Lightning handler) requeues
    the task as Lightning's handler would; while a Trainer runs, Lightning's handler answers it
    (job.lightning_answers_requeue)."""
    if not on_slurm():
        return
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job_id = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ["SLURM_JOB_ID"]

    def requeue(signum: int, frame: object) -> None:
        subprocess.run(["scontrol", "requeue", job_id], check=False)

    signal.signal(signal.SIGUSR1, requeue)


def survive_requeue_signal() -> None:
    """Under SLURM, ``srun`` signals every process of the task with USR1 before the time limit: each
    fold's Trainer handles it (checkpoint, requeue); this parent process must only not die of it."""
    if on_slurm():
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def run_local(run_dir: Path, plan: RunPlan, folds: list[int], devices: str | None = None,
              folds_per_device: int = 1, workers: int = 1, fold_batch: str = "off") -> None:
    """Run `folds` with the executor the options ask for (``fold_batch``: 'off', 'auto' or N folds per job)."""
    slots = make_slots(devices, folds_per_device, workers)
    size = parse_fold_batch(fold_batch)
    if len(slots) == 1 and devices is None:
        run_sequential(run_dir, plan, folds, size)
    else:
        run_parallel(run_dir, plan, folds, slots, size)
