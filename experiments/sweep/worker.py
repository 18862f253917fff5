"""Sweep worker command: pull trials of a sweep's study until it is done (a local process or a SLURM array task).

    python -m experiments.sweep.worker OUTPUT [--index I] [--max-requeues N]  # I seeds this worker's sampler
    python -m experiments.sweep.worker OUTPUT --summary                         # trials table and plots only

OUTPUT must have been set up by ``mer sweep`` (spec.yaml, sweep.json, study.journal). SIGTERM (the
parent's stop, ``scancel``, or SLURM stopping a requeued task) ends the running trial like Ctrl-C: it
is queued again at once and its LOSO run resumes from its finished folds and epochs. On SLURM, USR1
requeues the task (``runner.executors.requeue``; Lightning's handler while a fold trains), and a task
requeued more than ``--max-requeues`` times ends at its start with one line.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from datamodules.errors import MERError

from ..exit_codes import guarded
from ..runner.executors.requeue import requeue_on_usr1, restarts


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="a sweep output directory set up by mer sweep")
    parser.add_argument("--index", type=int, default=int(os.environ.get("SLURM_ARRAY_TASK_ID", 0)),
                        help="worker index, added to the sampler seed (default: $SLURM_ARRAY_TASK_ID or 0)")
    parser.add_argument("--summary", action="store_true", help="write the trials table and plots, run nothing")
    parser.add_argument("--max-requeues", type=int, help="end instead of working when SLURM requeued the task more often")
    return parser.parse_args(argv)


def worker_main(argv: list[str] | None = None) -> None:
    requeue_on_usr1()  # first, before the heavy imports below
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.max_requeues is not None and restarts() > args.max_requeues:
        raise MERError(f"sweep worker task requeued {restarts()} times (--max-requeues {args.max_requeues}): a trial "
                       "whose epoch does not fit into --time never ends; give a longer --time (or a larger "
                       "--max-requeues) and rerun mer sweep on this output, which resumes the study")
    from .launch import interrupt
    from .study import SweepSettings, open_study, work
    from .summary import summarize

    if args.summary:
        settings = SweepSettings.load(args.output)
        spec = settings.spec(args.output)
        summarize(open_study(args.output, spec, settings.seed), spec, args.output)
        return
    signal.signal(signal.SIGTERM, interrupt)
    work(args.output, args.index)


if __name__ == "__main__":
    guarded(worker_main, "finished trials are kept in the study journal; rerun mer sweep to resume")
