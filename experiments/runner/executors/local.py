"""Executors on one machine: jobs one after another in this process, or in worker processes.

A job (``runner.jobs``) is one fold or, under ``--fold-batch``, a group of folds trained at once; every
executor calls its ``run(plan, report)``. Worker processes (spawn) each run one job attempt, pinned to a GPU through
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
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path

from tqdm.auto import tqdm

from datamodules.errors import MERError

from ...lightning_cli import on_slurm
from ..jobs import Job, pending_jobs
from ..jobs.fold_group_job import HOST_WORKERS
from ..options import LocalExecutor, parse_devices
from ..run_plan import RunPlan, is_rank_zero
from .requeue import requeue_on_usr1

ATTEMPTS = 2  # a crashed fold is retried once


@dataclass
class Slot:
    """One place a fold can run: a name for the progress bar and the environment of its worker."""

    name: str
    env: dict[str, str] = field(default_factory=dict)


def make_slots(executor: LocalExecutor) -> list[Slot]:
    """One slot per fold run at once: K per GPU of ``--devices``, else one per CPU worker."""
    if executor.devices is not None:
        per_device = executor.folds_per_device
        return [Slot(f"g{d}.{j}" if per_device > 1 else f"g{d}", {"CUDA_VISIBLE_DEVICES": d})
                for d in parse_devices(executor.devices) for j in range(per_device)]
    return [Slot(f"w{i}", {HOST_WORKERS: str(executor.workers)}) for i in range(executor.workers)]


def fold_bar(folds: list[int], done: int) -> tqdm:
    """The progress bar over folds; shown by rank 0 only (a DDP fold's other ranks run the same loop)."""
    return tqdm(total=len(folds), initial=done, desc="folds", unit="fold", dynamic_ncols=True, disable=not is_rank_zero())


def run_sequential(plan: RunPlan, folds: list[int], jobs: list[Job]) -> None:
    """Every job in this process, one after another."""
    requeue_on_usr1()  # between two folds (no Trainer, so no Lightning handler) USR1 still requeues the task
    with fold_bar(folds, len(folds) - sum(len(job.folds) for job in jobs)) as bar:
        for job in jobs:
            job.run(plan, report=bar.set_postfix_str)
            bar.update(len(job.folds))


def _job_worker(job: Job, slot: str, env: dict[str, str], messages: mp.Queue) -> None:
    """Body of a worker process: one job; its traceback goes to the job's error.log on failure."""
    os.environ.update(env)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # Lightning installs its requeue handler only over the default

    def report(text: str) -> None:
        messages.put((slot, text))

    try:
        job.run(RunPlan.load(job.run_dir), report)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BaseException:
        job.error_log.parent.mkdir(parents=True, exist_ok=True)
        job.error_log.write_text(traceback.format_exc())
        raise


def run_parallel(plan: RunPlan, folds: list[int], slots: list[Slot], jobs: list[Job]) -> None:
    """Jobs in worker processes, one per slot at a time; raises MERError naming folds whose job failed twice."""
    context = mp.get_context("spawn")
    messages = context.Queue()
    pending = deque(jobs)
    attempts = {job: 0 for job in pending}
    running: dict[str, tuple[BaseProcess, Job]] = {}
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
                        process = context.Process(target=_job_worker, args=(job, slot.name, slot.env, messages),
                                                  name=f"mer-fold-{job.folds[0]}", daemon=False)
                        process.start()
                        running[slot.name] = (process, job)
                        status[slot.name] = f"{job.name} starting"
                _drain(messages, status, timeout=0.5)
                for name, (process, job) in list(running.items()):
                    if process.exitcode is None:
                        continue
                    process.join()
                    del running[name]
                    status[name] = "idle"
                    done = job.done_folds()
                    bar.update(len(done))
                    if len(done) == len(job.folds):
                        continue
                    if attempts[job] < ATTEMPTS:
                        retry = job.remaining()
                        attempts[retry] = attempts[job]
                        pending.appendleft(retry)
                    else:
                        failed.append(f"{', '.join(plan.fold_name(k) for k in job.folds if k not in done)}: worker exit "
                                      f"code {process.exitcode}, see {job.error_log}")
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


def stop(running: dict[str, tuple[BaseProcess, Job]]) -> None:
    """End our own worker processes (each by its pid) and wait for them."""
    for process, _ in running.values():
        if process.exitcode is None:
            process.terminate()
    for process, _ in running.values():
        process.join(timeout=30)
        if process.exitcode is None:
            process.kill()
            process.join()


def survive_requeue_signal() -> None:
    """Under SLURM, ``srun`` signals every process of the task with USR1 before the time limit: each
    fold's Trainer handles it (checkpoint, requeue); this parent process must only not die of it."""
    if on_slurm():
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def run_local(run_dir: Path, plan: RunPlan, folds: list[int], executor: LocalExecutor, fold_batch: int | None) -> None:
    """Run `folds` with the executor the options ask for (``fold_batch``: None, or N folds per job, 0 = auto)."""
    slots = make_slots(executor)
    jobs = pending_jobs(run_dir, folds, fold_batch, len(slots))
    if len(slots) == 1 and executor.devices is None:
        run_sequential(plan, folds, jobs)
    else:
        run_parallel(plan, folds, slots, jobs)
