"""Around each Trainer call of a job: Ctrl-C as KeyboardInterrupt, the deliberate cluster environment,
and Lightning's handler answering SLURM's requeue signal."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import lightning as L

from ...lightning_cli import deliberate_environment


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt(trainer: L.Trainer) -> Iterator[None]:
    """Lightning turns Ctrl-C into ``sys.exit(1)`` (and ignores SIGINT from then on); undo both."""
    try:
        yield
    except SystemExit:
        if not trainer.interrupted:
            raise
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt from None


@contextlib.contextmanager
def lightning_answers_requeue() -> Iterator[None]:
    """While a Trainer runs, Lightning's SLURM handler answers USR1 (it installs itself only over the
    default handler); before and after, the executor's own handler does (``executors.requeue.requeue_on_usr1``)."""
    previous = signal.getsignal(signal.SIGUSR1)
    if not callable(previous):
        yield
        return
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


@contextlib.contextmanager
def trainer_call(trainer: L.Trainer) -> Iterator[None]:
    """Around each Trainer call of a job: the three above."""
    with interrupts_as_keyboard_interrupt(trainer), deliberate_environment(), lightning_answers_requeue():
        yield
