"""The checkpoints of the runner's Trainers: written atomically, the resume point's predecessor kept, and
checked before a resume.

Lightning 2.6's writer (``TorchCheckpointIO``) stages a checkpoint in the system's temporary directory
and moves it into place; across file systems (a node-local ``/tmp``, outputs on NFS or Lustre) that move
is a copy, and a kill during it leaves a truncated file, nothing synced to disk. Every Trainer the runner
builds writes through :class:`AtomicCheckpointIO` instead: beside the target, fsync, rename. A job's resume
point ``last.ckpt`` also keeps its predecessor as ``previous.ckpt`` (:func:`save_resume_point`), so a
damaged one (bytes flipped on disk, a copy cut short) costs one epoch, not the fold: before resuming,
:func:`resume_checkpoint` reads both (every byte against the CRC-32 the zip format stores, then the
contents), names an unreadable one in one line, and resumes from the other or restarts the job.
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from ..atomic_files import replaced_atomically
from .paths import TrainerRoot


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the target, flushed to disk, then renamed over it: a
    reader, or a kill at any moment, sees the old checkpoint or the new one, whole. Remote paths
    (``s3://``, ...) are left to Lightning's writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(target, suffix=target.suffix) as tmp, tmp.open("wb") as file:
            torch.save(checkpoint, file)


def use_atomic_checkpoints(trainer: L.Trainer) -> None:
    """Let `trainer` write its checkpoints (resume points, a ModelCheckpoint's, Lightning's SLURM
    ``hpc_ckpt_*``) through :class:`AtomicCheckpointIO`, unless the config chose a writer of its own."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def previous_of(path: Path) -> Path:
    """Where the resume point `path` keeps its predecessor: ``previous.ckpt`` beside it."""
    return path.with_name("previous.ckpt")


def save_resume_point(trainer: L.Trainer, path: Path) -> None:
    """Save the job's resume point `path`; the one it replaces stays as ``previous.ckpt`` (a hard link,
    no copy, where the file system has them). Every rank calls it (rank 0 writes)."""
    if trainer.is_global_zero and path.is_file():
        keep_as(path, previous_of(path))
    trainer.save_checkpoint(path, weights_only=False)


def keep_as(path: Path, copy: Path) -> None:
    """`copy` becomes (atomically) a second name of `path`, or a copy of it."""
    with replaced_atomically(copy, suffix=copy.suffix) as tmp:
        tmp.unlink()
        try:
            os.link(path, tmp)
        except OSError:  # no hard links here (some network and FUSE file systems)
            shutil.copyfile(path, tmp)


class UnreadableCheckpoint(Exception):
    """A checkpoint that cannot be resumed from (message: why, in a few words)."""


def check_integrity(path: Path) -> None:
    """Raise :class:`UnreadableCheckpoint` unless `path` is a whole checkpoint file: a zip archive whose every
    entry matches its stored CRC-32 (``torch.load`` would not notice flipped bytes in the weights: it maps
    the tensors as they are)."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise UnreadableCheckpoint(_why(err)) from None
    if damaged is not None:
        raise UnreadableCheckpoint(f"{damaged} fails its CRC check")


def checkpoint_epoch(path: Path) -> int:
    """The epoch of the whole (:func:`check_integrity`), readable Lightning checkpoint `path`; else
    :class:`UnreadableCheckpoint`."""
    check_integrity(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # whatever the unpickler trips over, the file cannot be resumed from
        raise UnreadableCheckpoint(_why(err)) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "epoch"} <= set(checkpoint):
        raise UnreadableCheckpoint("not a Lightning checkpoint")
    return int(checkpoint["epoch"])


def _why(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"


def resume_checkpoint(root: TrainerRoot, name: str) -> Path | None:
    """The readable resume point of the job `name` ('fold 3', 'folds 0-3') in `root`: its ``last.ckpt``,
    else its ``previous.ckpt`` (renamed to ``last.ckpt``), else None after emptying `root` (the job
    starts again). A damaged or missing ``last.ckpt`` is named in one line on stderr with what is done
    instead. Rank 0 only."""
    last, previous = root.last_ckpt, previous_of(root.last_ckpt)
    problems = [] if last.is_file() or not previous.is_file() else [f"{last} is missing"]
    for path in (last, previous):
        if not path.is_file():
            continue
        try:
            epoch = checkpoint_epoch(path)
        except UnreadableCheckpoint as err:
            problems.append(f"{path} is unreadable ({err})")
            continue
        if path == previous:
            os.replace(previous, last)
            warn(f"{name}: {'; '.join(problems)}: resuming from {previous.name} (epoch {epoch})")
        for leftover in root.dir.glob(".*.tmp*"):  # files a killed writer did not finish
            leftover.unlink(missing_ok=True)
        return last
    if problems:
        warn(f"{name}: {'; '.join(problems)}: training it again from the start")
    shutil.rmtree(root.dir, ignore_errors=True)
    return None


def warn(line: str) -> None:
    """A ``warning:`` line on stderr (the run goes on)."""
    print(f"warning: {line}", file=sys.stderr, flush=True)


def drop_previous(root: TrainerRoot) -> None:
    """Remove the predecessor of a finished job's resume point (no resume will need it)."""
    previous_of(root.last_ckpt).unlink(missing_ok=True)

