"""A fold-group job: several folds of a planned run trained at once in one process and one Trainer.

The executors run it instead of a :class:`~.fold_job.FoldJob` under ``--fold-batch N|auto``: its folds are
cut into groups (N folds, or under ``auto`` as many as the device's free memory holds), each
trained by :class:`lightning_modules.fold_batch_module.FoldBatch` on a
:class:`datamodules.fold_batch_data.DeviceResidentFolds`. Every fold's model is initialised exactly
as its sequential job would be (seed ``seed_everything + k``, the same constructor arguments); its
batches are drawn with its own generator seeded from (its seed, epoch); dropout masks come from
the global generator, reseeded from (the group's first fold seed, epoch). So the checkpoint's epoch
is the whole random state and a killed group resumes exactly from its last epoch-end checkpoint.

Outputs per fold are those of a sequential job (``folds/fold_00k.json`` then ``folds/fold_00k.csv``,
predictions of its last weights); the group's directory ``folds/group_<folds>/`` holds
``group.json`` (its folds), ``last.ckpt`` (``previous.ckpt``: the one before, see ``runner.checkpoints``)
and CSV logs (per-fold training losses). A rerun reuses a
group that has a checkpoint, so the folds it trains do not depend on how ``auto`` sizes groups
then. Each fold's training curves go to its own W&B run, as on the sequential path (``group_wandb``).
"""

from __future__ import annotations

import inspect
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from datamodules.fold_batch_data import NO_INNER_VALIDATION, DeviceResidentFolds, free_memory
from datamodules.errors import MERError
from lightning_modules.fold_batch_module import GRADIENT_NORM_REFUSAL, FoldBatch, check_fold_batchable

from ...atomic_files import read_json, write_json
from ..checkpoints import drop_previous, resume_checkpoint, save_resume_point
from ..fold_selection import format_folds
from ..paths import FoldPaths, GroupPaths
from ..run_plan import RunConfig, RunPlan, check_fold_plan, instantiate
from .epoch_seeding import EpochSeeding, epoch_seed
from .fold_outputs import write_fold_outputs
from .group_wandb import FoldWandbRuns
from .job import Job, JobStatus, Report
from .trainer_calls import trainer_call

AUTO_MEMORY_SHARE = 0.6  # our choice: under `auto`, a group may fill 60 % of the free device memory
HOST_WORKERS = "MER_HOST_WORKERS"  # environment: how many local CPU workers share the host's memory
CHECKPOINT_EVERY_S = 30.0  # our choice: epoch-end checkpoints at most this often (and after the last epoch)


@dataclass(frozen=True)
class FoldGroupJob(Job):
    """Folds `folds` of the run in `run_dir` trained at once, in groups of `size` folds (0 = auto: as many
    as fit in memory, measured when the job runs); groups an earlier attempt started are resumed as they were."""

    run_dir: Path
    folds: tuple[int, ...]
    size: int

    def train_and_predict(self, plan: RunPlan, report: Report | None) -> None:
        for group in fold_groups(self.run_dir, list(self.folds), self.size):
            paths = GroupPaths(self.run_dir, tuple(group))
            if self.size == 0 and not paths.last_ckpt.is_file():
                cli = instantiate(group_config(plan, paths))
                cli.datamodule.prepare_data()
                n = auto_group_size(cli.model, cli.datamodule, plan, group, cli.trainer.strategy.root_device)
                for start in range(0, len(group), n):
                    train_group(self.run_dir, group[start:start + n], plan, report)
            else:
                train_group(self.run_dir, group, plan, report)


def check_fold_batch(config: RunConfig) -> None:
    """A model, trainer and data split whose folds can be trained at once (``--fold-batch``)."""
    trainer = config.trainer
    if not config.one_device:
        raise MERError(f"--fold-batch trains a group of folds on one device, but the config sets trainer.devices "
                       f"{config.devices}; add --trainer.devices 1 or use --fold-batch off")
    if trainer.get("callbacks"):
        raise MERError("--fold-batch runs none of the config's trainer.callbacks per fold; remove them or use --fold-batch off")
    if trainer.get("gradient_clip_val") and trainer.get("gradient_clip_algorithm", "norm") != "value":
        raise MERError(GRADIENT_NORM_REFUSAL)
    if str(trainer.get("precision")) in ("16", "16-mixed"):
        raise MERError("--fold-batch: 16-bit mixed precision has one gradient scaler for all folds (an overflow in "
                       "one fold would skip every fold's step); use --trainer.precision bf16-mixed or 32, or --fold-batch off")
    if config.val_subjects:
        raise MERError(NO_INNER_VALIDATION)
    model_class = config.model_class()
    if model_class is not None:
        check_fold_batchable(model_class)


def started_groups(run_dir: Path, folds: list[int]) -> list[list[int]]:
    """Groups of earlier attempts with a checkpoint, all of whose folds are in `folds` and some not done."""
    groups = []
    for record in sorted((run_dir / "folds").glob("group_*/group.json")):
        group = read_json(record, f"delete the folder {record.parent} (its folds train again)", keys=("folds",))["folds"]
        if (record.parent / "last.ckpt").is_file() and set(group) <= set(folds) and \
                not all(FoldPaths(run_dir, k).done() for k in group):
            groups.append(group)
    return groups


class GroupEpochStart(L.Callback):
    """Each fold's batch order of the epoch, from its own generator seeded by (fold seed, epoch)."""

    def __init__(self, data: DeviceResidentFolds, seeds: list[int]) -> None:
        self.data, self.seeds = data, seeds

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.data.start_epoch([epoch_seed(seed, trainer.current_epoch, 0) for seed in self.seeds])


class ThrottledCheckpoint(L.Callback):
    """The group's resume point ``last.ckpt`` at an epoch end, at most every `every_s` seconds and
    always after the last epoch (an epoch-end checkpoint of any epoch resumes exactly), and at the end
    of training when that ends otherwise (``max_steps``, ``max_time``): ``mer probe`` reads the weights
    that predicted."""

    def __init__(self, path: Path, every_s: float) -> None:
        self.path, self.every_s, self.saved, self.saved_step = path, every_s, time.monotonic(), -1

    def save(self, trainer: L.Trainer) -> None:
        save_resume_point(trainer, self.path)
        self.saved, self.saved_step = time.monotonic(), trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        if last or time.monotonic() - self.saved >= self.every_s:
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self.saved_step:
            self.save(trainer)


def group_config(plan: RunPlan, paths: GroupPaths) -> RunConfig:
    """The run's config for the group: its first fold's index and seed, the group's own root and CSV log, and
    one device (``devices: auto`` on a multi-GPU node would otherwise make the group a DDP job whose ranks
    split each fold's steps; groups spread over GPUs with ``--devices``)."""
    return plan.fold_config(paths.folds[0]).with_trainer(
        devices=1, default_root_dir=str(paths.dir), enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
        logger={"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(paths.dir), "name": "logs"}})


def fold_models(model: Any, datamodule: Any, plan: RunPlan, folds: list[int]) -> list[Any]:
    """One model per fold, built as the sequential job builds it: seed ``seed_everything + k``, then the
    model's constructor with its (linked) arguments for that fold."""
    arguments = inspect.signature(type(model)).parameters
    models = []
    for k in folds:
        datamodule.fold = k
        hparams = {name: value for name, value in model.hparams.items() if name in arguments}
        if "num_identities" in hparams:
            hparams["num_identities"] = datamodule.num_identities
        L.seed_everything(plan.fold_seed(k), verbose=False)
        models.append(type(model)(**hparams))
    return models


def saved_bytes(module: FoldBatch, data: DeviceResidentFolds) -> int:
    """Bytes the autograd graph keeps for one training step of `module` (its activations; a throw-away
    module: its BatchNorm statistics move)."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    data.start_epoch([0] * len(data.folds))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module.batched_forward(data.train_batch(0))
    return total


def memory_sharers(device: torch.device) -> int:
    """How many jobs size their groups from `device`'s free memory at once: on the CPU the local
    workers (``HOST_WORKERS``, set by the local executor), on a GPU one."""
    return max(1, int(os.environ.get(HOST_WORKERS, "1"))) if device.type == "cpu" else 1


def auto_group_size(model: Any, datamodule: Any, plan: RunPlan, folds: list[int], device: torch.device) -> int:
    """As many folds as fit in this job's share (:func:`memory_sharers`) of AUTO_MEMORY_SHARE of the free
    memory: per fold its weights, gradients and two optimiser moments, and one step's activations
    (measured on one fold), next to the job's own copy of the data."""
    probe_fold = folds[:1]
    data = DeviceResidentFolds(datamodule, probe_fold, device)
    module = FoldBatch(fold_models(model, datamodule, plan, probe_fold), data).to(device)
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    per_fold = 4 * weights + saved_bytes(module, data)
    table = sum(t.numel() * t.element_size() for t in data.data.values())
    del module, data
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the probe's blocks, else counted as used
    budget = AUTO_MEMORY_SHARE * free_memory(device) / memory_sharers(device) - table
    return max(1, min(len(folds), int(budget // max(per_fold, 1))))


def train_group(run_dir: Path, folds: list[int], plan: RunPlan, report: Report | None = None) -> None:
    """Train the folds `folds` of the run in `run_dir` at once (resuming the group's checkpoint), then
    let each predict its held-out subject(s) and write its outputs."""
    paths = GroupPaths(run_dir, tuple(folds))
    resume_checkpoint(paths, f"folds {format_folds(folds)}")  # a damaged last.ckpt: previous.ckpt, or start again
    paths.dir.mkdir(parents=True, exist_ok=True)
    write_json(paths.record, {"folds": list(folds)})
    seeds = [plan.fold_seed(k) for k in folds]
    cli = instantiate(group_config(plan, paths))
    trainer, datamodule = cli.trainer, cli.datamodule
    datamodule.prepare_data()
    for k in folds:
        check_fold_plan(run_dir, k, datamodule)
    data = DeviceResidentFolds(datamodule, folds, trainer.strategy.root_device)
    module = FoldBatch(fold_models(cli.model, datamodule, plan, folds), data, compile=plan.compile)
    callbacks = [EpochSeeding(seeds[0]), GroupEpochStart(data, seeds), ThrottledCheckpoint(paths.last_ckpt, CHECKPOINT_EVERY_S)]
    if report is not None:
        callbacks.append(JobStatus(f"folds {format_folds(folds)}", report))
    wandb_runs = FoldWandbRuns(plan, run_dir, folds) if plan.wandb != "disabled" else None
    trainer.callbacks.extend([*callbacks, *([wandb_runs] if wandb_runs else [])])
    steps = DataLoader(range(data.steps_per_epoch), batch_size=None)
    try:
        with trainer_call(trainer):
            trainer.fit(module, train_dataloaders=steps, ckpt_path=paths.last_ckpt if paths.last_ckpt.is_file() else None)
    finally:
        if wandb_runs is not None:
            wandb_runs.finish()
    module.to(trainer.strategy.root_device)
    with trainer.precision_plugin.predict_step_context():
        predictions = [module.predict_fold(i, data.test_batches(i)) for i in range(len(folds))]
    for i, k in enumerate(folds):
        if FoldPaths(run_dir, k).done():
            continue
        datamodule.fold = k
        index, probs = (t.cpu().numpy() for t in predictions[i])
        write_fold_outputs(run_dir, plan, k, trainer, datamodule, index, probs.astype(np.float64),
                           executor="fold_batch", fold_group=list(folds))
    drop_previous(paths)


def fold_groups(run_dir: Path, folds: list[int], size: int) -> list[list[int]]:
    """Groups of the not-yet-done `folds`: groups started earlier first, then chunks of `size` (0 = auto:
    sized when the job runs, see :class:`FoldGroupJob`)."""
    started = started_groups(run_dir, folds)
    taken = {k for group in started for k in group}
    todo = [k for k in folds if k not in taken and not FoldPaths(run_dir, k).done()]
    if size == 0:
        return started + ([todo] if todo else [])
    return started + [todo[i:i + size] for i in range(0, len(todo), size)]


def job_chunks(folds: list[int], size: int, slots: int) -> list[list[int]]:
    """Fold jobs for `slots` parallel workers: groups of `size`, or under auto (0) one even share per slot."""
    if size:
        return [folds[i:i + size] for i in range(0, len(folds), size)]
    per_slot = math.ceil(len(folds) / max(slots, 1)) if folds else 1
    return [folds[i:i + per_slot] for i in range(0, len(folds), per_slot)]
