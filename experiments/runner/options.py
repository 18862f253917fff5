"""Options of ``mer loso`` beside the LightningCLI config: where to write, which folds, how to run them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class LosoOptions:
    """How a LOSO (or k-fold) run is executed.

    Args:
        output: run directory (default ``outputs/<config folder>-<config name>``); rerun to resume.
        folds: only these fold indices, e.g. ``0-9`` or ``3,5``.
        devices: GPU ids to spread folds over, e.g. ``0,1,2,3`` (default: none, CPU).
        folds_per_device: folds trained at once on each GPU.
        workers: worker processes on CPU (folds at once).
        threads_per_fold: intra-op threads of each fold (default: CPU cores / folds at once);
            recorded in run.json so every executor trains a fold identically.
        launcher: ``local`` (this machine) or ``slurm`` (one array task per chunk of folds).
        partition: SLURM partition.
        time: SLURM time limit per array task.
        gpus_per_task: GPUs per SLURM array task.
        cpus_per_task: CPUs per SLURM array task.
        array_parallelism: at most this many array tasks at once (SLURM ``%N``).
        folds_per_task: folds per SLURM array task.
        dry_run: print the sbatch script(s) instead of submitting.
        fold_batch: ``off`` (one fold per Trainer), ``auto`` or N: train N folds at once in one
            process (stacked per-fold weights; see ``experiments.runner.fold_batch``).
        compile: with ``--fold-batch`` on a GPU, ``torch.compile`` the folds' batched (vmap) loss
            (our choice: off by default; the first steps then pay the compilation).
        seeds: repeat the whole fold plan once per seed, e.g. ``0,1,2`` (outputs under OUTPUT/seed_N).
        aggregate_only: pool the finished folds of this run directory and stop.
        wandb: W&B mode (default offline, or ``$WANDB_MODE``).
        wandb_project: W&B project.
    """

    output: Path | None = None
    folds: str | None = None
    devices: str | None = None
    folds_per_device: int = 1
    workers: int = 1
    threads_per_fold: int | None = None
    launcher: Literal["local", "slurm"] = "local"
    partition: str | None = None
    time: str = "04:00:00"
    gpus_per_task: int = 0
    cpus_per_task: int = 2
    array_parallelism: int | None = None
    folds_per_task: int = 1
    dry_run: bool = False
    fold_batch: str = "off"
    compile: bool = False
    seeds: str | None = None
    aggregate_only: Path | None = None
    wandb: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "mer-suite"

    def executor_arguments(self) -> list[str]:
        """The local executor's options as ``mer loso`` arguments (those not at their defaults), for the
        printed command that finishes or resumes a run the way it was started."""
        given = {"--devices": self.devices, "--folds-per-device": self.folds_per_device if self.devices else 1,
                 "--workers": self.workers, "--fold-batch": self.fold_batch}
        defaults = {"--devices": None, "--folds-per-device": 1, "--workers": 1, "--fold-batch": "off"}
        named = [item for name, value in given.items() if value != defaults[name] for item in (name, str(value))]
        return named + (["--compile"] if self.compile else [])


def wandb_arguments(mode: str, project: str) -> list[str]:
    """``--wandb``/``--wandb-project`` as ``mer loso`` arguments, where they differ from the defaults."""
    defaults = LosoOptions()
    return ([*(["--wandb", mode] if mode != defaults.wandb else []),
             *(["--wandb-project", project] if project != defaults.wandb_project else [])])
