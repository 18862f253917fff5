"""Options of ``mer loso`` beside the LightningCLI config, grouped by concern; each group checks its own
values (``check``), :meth:`LosoOptions.check` adds the checks that span groups.

On the command line every option keeps its flat name (``--workers``, ``--partition``, ``--wandb``):
:func:`add_loso_options` adds each group's options from its signature and docstring.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from jsonargparse import ArgumentParser, Namespace

from datamodules.errors import MERError

from ..signature_options import add_signature_options
from .fold_selection import MAX_SEED, parse_folds, parse_numbers
from .slurm_options import SlurmOptions
from .wandb_runs import sweep_trial


@dataclass
class RunScope:
    """What to run.

    Args:
        output: run directory (default ``outputs/<config folder>-<config name>``); rerun to resume.
        folds: only these fold indices, e.g. ``0-9`` or ``3,5``.
        seeds: repeat the whole fold plan once per seed, e.g. ``0,1,2`` (outputs under OUTPUT/seed_N).
        aggregate_only: pool the finished folds of this run directory and stop.
    """

    output: Path | None = None
    folds: str | None = None
    seeds: str | None = None
    aggregate_only: Path | None = None

    def check(self) -> None:
        """The syntax of ``--folds`` (its range once the folds are known) and ``--seeds``."""
        if self.folds is not None:
            parse_folds(self.folds, n_folds=sys.maxsize)
        if self.seeds is not None:
            self.seed_list()

    def seed_list(self) -> list[int]:
        """The seeds of '0,1,2' or '0-4' (sorted, distinct); one-line error for anything else."""
        seeds = parse_numbers(str(self.seeds), "--seeds", "seeds like '0,1,2' or '0-4'")
        if seeds[-1] > MAX_SEED:
            raise MERError(f"--seeds '{self.seeds}': seed {seeds[-1]} is too large (seeds are 0..{MAX_SEED})")
        return seeds


@dataclass
class LocalExecutor:
    """How folds run on this machine (also inside a SLURM array task).

    Args:
        devices: GPU ids to spread folds over, e.g. ``0,1,2,3`` (default: none, CPU).
        folds_per_device: folds trained at once on each GPU.
        workers: worker processes on CPU (folds at once).
        threads_per_fold: intra-op threads of each fold (default: CPU cores / folds at once);
            recorded in run.json so every executor trains a fold identically.
    """

    devices: str | None = None
    folds_per_device: int = 1
    workers: int = 1
    threads_per_fold: int | None = None

    def check(self) -> None:
        if self.workers < 1 or self.folds_per_device < 1:
            raise MERError("--workers and --folds-per-device must be at least 1")
        if self.threads_per_fold is not None and self.threads_per_fold < 1:
            raise MERError("--threads-per-fold must be at least 1")
        if self.devices is not None:
            self.device_list()

    def device_list(self) -> list[str]:
        return parse_devices(self.devices or "")

    def check_visible(self) -> None:
        """``--devices`` names GPUs this machine shows: ids of ``CUDA_VISIBLE_DEVICES`` where it is set (each fold
        worker gets one of them as its ``CUDA_VISIBLE_DEVICES``), else 0..N-1. Checked where ``mer loso`` runs the
        folds itself; a SLURM array task uses the devices SLURM gives it."""
        if self.devices is None:
            return
        import torch  # only here: the options are read by `mer loso --help`, which imports no torch

        count = torch.cuda.device_count()
        if count == 0:
            raise MERError(f"--devices {self.devices}: torch sees no CUDA GPU on this machine; leave --devices out to "
                           "train on the CPU")
        listed = os.environ.get("CUDA_VISIBLE_DEVICES")
        visible = [d.strip() for d in listed.split(",")] if listed else [str(i) for i in range(count)]
        if not all(d.isdigit() for d in visible):  # UUIDs or MIG names: the indices cannot be checked here
            return
        unknown = [d for d in self.device_list() if d not in visible]
        if unknown:
            where = f"CUDA_VISIBLE_DEVICES={listed}" if listed else f"{count} GPU(s)"
            raise MERError(f"--devices {self.devices}: GPU(s) {','.join(unknown)} not visible here ({where}); "
                           f"give ids among {','.join(visible)}")

    @property
    def parallel(self) -> bool:
        """Several folds at once (one per device or worker)."""
        return self.devices is not None or self.workers > 1

    @property
    def folds_at_once(self) -> int:
        return len(self.device_list()) * self.folds_per_device if self.devices else self.workers


def parse_devices(spec: str) -> list[str]:
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    if not devices or not all(d.isdigit() for d in devices):
        raise MERError(f"--devices '{spec}' is not a list of GPU indices like '0,1,2,3'")
    return devices


@dataclass
class FoldBatching:
    """Several folds trained at once in one process (``jobs.fold_group_job``).

    Args:
        fold_batch: ``auto`` or N: train as many folds as fit in memory (or N) at once in one process
            (stacked per-fold weights; see ``experiments.runner.jobs.fold_group_job``); ``off``: one fold
            per Trainer. Default: the mode run.json records when resuming, else ``auto`` where the model,
            trainer and data allow it and fold batching was shown equivalent for the model, else ``off``
            (one line says why).
        compile: with ``--fold-batch`` on a GPU, ``torch.compile`` the folds' batched (vmap) loss
            (our choice: off by default; the first steps then pay the compilation).
    """

    fold_batch: str | None = None
    compile: bool = False

    @property
    def given(self) -> bool:
        """Whether the mode was chosen (by the user, or resolved by ``planning.resolve_fold_batch``)."""
        return self.fold_batch is not None

    @property
    def size(self) -> int | None:
        """'off' -> None, 'auto' -> 0, 'N' -> N (>= 1); anything else is a user error. An unresolved default
        counts as 'auto'."""
        text = str(self.fold_batch or "auto").strip().lower()
        if text == "off":
            return None
        if text == "auto":
            return 0
        if text.isdigit() and int(text) >= 1:
            return int(text)
        raise MERError(f"--fold-batch '{self.fold_batch}' is not 'off', 'auto' or a number of folds >= 1")

    def check(self) -> None:
        if self.given and self.size is None and self.compile:
            raise MERError("--compile compiles the fold-batched training step; add --fold-batch auto (or N), or drop --compile")


WandbMode = Literal["offline", "online", "disabled"]


@dataclass
class WandbOptions:
    """Where the fold and pooled runs are logged.

    Args:
        mode: W&B mode (default offline, or ``$WANDB_MODE``).
        project: W&B project.
    """

    mode: WandbMode = "offline"
    project: str = "mer-suite"

    def check(self) -> None:
        """The mode (the command line checks it; options built in Python are checked here)."""
        if self.mode not in get_args(WandbMode):
            raise MERError(f"--wandb '{self.mode}' is not one of {', '.join(get_args(WandbMode))}")

    def arguments(self) -> list[str]:
        """``--wandb``/``--wandb-project`` as ``mer loso`` arguments, where they differ from the defaults."""
        default = WandbOptions()
        return [*(["--wandb", self.mode] if self.mode != default.mode else []),
                *(["--wandb-project", self.project] if self.project != default.project else [])]


# The groups: (attribute of LosoOptions, class, command-line names of its fields where they differ)
GROUPS: dict[str, tuple[type, dict[str, str]]] = {
    "scope": (RunScope, {}),
    "local": (LocalExecutor, {}),
    "slurm": (SlurmOptions, {}),
    "batching": (FoldBatching, {}),
    "wandb": (WandbOptions, {"mode": "wandb", "project": "wandb_project"}),
}
PARSER_KEY = "loso_{}"  # where a group's values are parsed, beside LightningCLI's trainer/model/data


@dataclass
class LosoOptions:
    """How a LOSO (or k-fold) run is executed: one group per concern."""

    scope: RunScope = field(default_factory=RunScope)
    local: LocalExecutor = field(default_factory=LocalExecutor)
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    batching: FoldBatching = field(default_factory=FoldBatching)
    wandb: WandbOptions = field(default_factory=WandbOptions)

    @classmethod
    def of(cls, **flags: Any) -> LosoOptions:
        """The options given by their command-line names (``workers=2``, ``wandb='disabled'``)."""
        groups: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
        for flag, value in flags.items():
            owner = next(((name, f.name) for name, (group, renamed) in GROUPS.items() for f in fields(group)
                          if renamed.get(f.name, f.name) == flag), None)
            if owner is None:
                raise TypeError(f"mer loso has no option --{flag.replace('_', '-')}")
            groups[owner[0]][owner[1]] = value
        return cls(**{name: GROUPS[name][0](**values) for name, values in groups.items()})

    @classmethod
    def from_parsed(cls, config: Namespace) -> LosoOptions:
        """The options parsed by a parser that :func:`add_loso_options` extended."""
        return cls(**{name: group(**config[PARSER_KEY.format(name)].as_dict()) for name, (group, _) in GROUPS.items()})

    def check(self) -> None:
        """Every group's values, then the combinations that cannot work."""
        for name in GROUPS:
            getattr(self, name).check()
        if self.batching.given:
            self.check_fold_batch_executor()
        if not self.slurm.on_slurm:
            self.local.check_visible()
        if self.slurm.on_slurm and sweep_trial() is not None:
            raise MERError("--launcher slurm inside a wandb agent trial returns once the jobs are submitted, so the "
                           "trial would end without its pooled metric; run the agent inside SLURM jobs "
                           "(configs/sweeps/wandb_agent.sbatch) with the local executor (--devices/--workers)")

    def check_fold_batch_executor(self) -> None:
        """Fold batching combined with the local executor's options."""
        if self.batching.size == 0 and self.local.devices is not None and self.local.folds_per_device > 1:
            raise MERError(f"--fold-batch auto sizes a group to a GPU's free memory, but --folds-per-device "
                           f"{self.local.folds_per_device} puts several groups on each GPU; give --fold-batch N instead")

    def default_threads(self) -> int:
        """Intra-op threads per fold: the CPUs of a machine (or of an array task) over the folds run at once."""
        if self.slurm.on_slurm:
            cpus, at_once = self.slurm.cpus_per_task, max(1, self.slurm.gpus_per_task) * self.local.folds_per_device
        else:
            cpus, at_once = len(os.sched_getaffinity(0)), self.local.folds_at_once
        return max(1, cpus // at_once)

    def executor_arguments(self) -> list[str]:
        """The local executor's options as ``mer loso`` arguments (those not at their defaults), for the
        printed command that finishes or resumes a run the way it was started."""
        local, batching = self.local, self.batching
        given = {"--devices": local.devices, "--folds-per-device": local.folds_per_device if local.devices else 1,
                 "--workers": local.workers, "--fold-batch": batching.fold_batch}
        defaults = {"--devices": None, "--folds-per-device": 1, "--workers": 1, "--fold-batch": None}
        named = [item for name, value in given.items() if value != defaults[name] for item in (name, str(value))]
        return named + (["--compile"] if batching.compile else [])


def add_loso_options(parser: ArgumentParser) -> None:
    """Every group's options, flat on the command line (``--workers``), parsed into the group's key."""
    for name, (group, renamed) in GROUPS.items():
        add_signature_options(parser, group, aliases=renamed, nested_key=PARSER_KEY.format(name))


def drop_loso_options(config: Namespace) -> None:
    """Remove what :func:`add_loso_options` parsed from `config` (leaving LightningCLI's own keys)."""
    for name in GROUPS:
        del config[PARSER_KEY.format(name)]

