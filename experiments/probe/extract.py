"""A finished fold's features on its training subjects' samples (or its held-out subjects'), from
the weights that predicted it."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from datamodules.errors import MERError
from lightning_modules.fold_batch_module import fold_state_from_group

from ..atomic_files import damaged, read_json
from ..runner.checkpoints import UnreadableCheckpoint, check_integrity
from ..runner.paths import FoldPaths, GroupPaths
from ..runner.run_plan import FOLD_PLAN, FOLD_PLAN_REMEDY, PROBE_TRAINER, RunPlan, fold_plan_difference, instantiate

# The Trainer is only built, never run: a run trained on GPUs (or in mixed precision) is probed anywhere.
BUILD_ONLY = {**PROBE_TRAINER, "enable_checkpointing": False, "accelerator": "cpu", "devices": 1, "num_nodes": 1,
              "strategy": "auto", "precision": "32-true"}


Part = Literal["training", "held_out"]
Reader = Callable[[torch.nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class FoldFeatures:
    """Features by name (N, D) of the fold's samples, each sample's subject (N,), the batch entries
    asked for by name (N, ...) and the samples' rows of the datamodule's table (N,)."""

    features: dict[str, np.ndarray]
    subjects: np.ndarray
    inputs: dict[str, np.ndarray]
    rows: np.ndarray


def probe_features(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return model.probe_features(batch)


def fold_features(plan: RunPlan, run_dir: Path, k: int, device: str, part: Part = "training",
                  keep: tuple[str, ...] = (), read: Reader = probe_features) -> FoldFeatures:
    """Rebuild fold k's model and datamodule from the run's config, load the weights that predicted it
    (:func:`weights_file`) and return ``read(model, batch)`` (default ``model.probe_features``; eval
    mode) on the samples of `part`: 'training' = its train and inner-val samples (never its test
    subjects), 'held_out' = its test subjects' samples. `keep`: batch entries returned beside the
    features (e.g. 'au')."""
    cli = instantiate(plan.fold_config(k).with_trainer(**BUILD_ONLY))
    model, datamodule = cli.model, cli.datamodule
    if datamodule.test_subjects != plan.test_subjects[k]:
        raise MERError(f"{plan.fold_name(k)}: the config now holds out {datamodule.test_subjects} in this fold "
                       "(run.json disagrees); probe with the code version that trained the run")
    check_against_fold_plan(run_dir, datamodule)
    load_weights(model, *weights_file(run_dir, k))
    datamodule.prepare_data()
    datamodule.setup("predict")
    names = ["train", "val"] if part == "training" else ["test"]
    samples = ConcatDataset([datamodule.datasets[name] for name in names])
    features = extract(model, DataLoader(samples, batch_size=datamodule.batch_size, shuffle=False,
                                         num_workers=datamodule.num_workers), device, plan.fold_name(k), keep, read)
    rows = features.pop("index").astype(np.int64)
    inputs = {key: features.pop(f"input:{key}") for key in keep}
    subjects = datamodule.row_subjects[rows]
    if (part == "training") == bool(set(subjects) & set(plan.test_subjects[k])):
        raise RuntimeError(f"{plan.fold_name(k)}: the {part} samples hold the wrong subjects")
    return FoldFeatures(features, subjects, inputs, rows)


def weights_file(run_dir: Path, k: int) -> tuple[Path, int | None]:
    """Where the weights that predicted fold k are (its record ``folds/fold_00k.json`` says): the checkpoint
    chosen on its inner validation split, else its last.ckpt, or (trained under --fold-batch) the group's
    last.ckpt with the fold's position in the group's stacked tensors."""
    paths = FoldPaths(run_dir, k)
    record: dict = {}
    if paths.record.is_file():
        try:
            record = json.loads(paths.record.read_text())
        except ValueError as err:
            raise MERError(f"{paths.record} is unreadable ({err}); rerun that fold (delete folds/fold_{k:03d}.csv "
                           "and run the same mer loso command) to write it again") from None
    if record.get("weights") == "inner_validation" and record.get("checkpoint"):
        return paths.dir / record["checkpoint"], None
    group = record.get("fold_group")
    if not group:
        return paths.last_ckpt, None
    return GroupPaths(run_dir, tuple(group)).last_ckpt, list(group).index(k)


def load_weights(model: torch.nn.Module, path: Path, position: int | None) -> None:
    """The checkpoint's weights of the fold into `model` (all keys must fit); `position`: the fold's
    slice of a fold group's stacked tensors (``lightning_modules.fold_batch_module.fold_state_from_group``)."""
    try:
        check_integrity(path)
    except UnreadableCheckpoint as err:
        raise damaged(path, str(err), "mer probe needs the weights that predicted the fold: train it again (delete "
                      "its folds/fold_00k.csv, .json and folder, then rerun the run's mer loso command)") from None
    try:
        state = read_state_dict(path)
        if position is not None:
            state = fold_state_from_group(state, list(model.state_dict()), position)
        model.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MERError(f"{path}: cannot load its weights into the run's model ({first_line}); "
                       "was config.yaml or the model's code changed after training?") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The 'state_dict' of a Lightning checkpoint, read as tensors only where torch can (a run's own
    last.ckpt whose hyper-parameters hold other types is read in full, as `mer loso` resumes it)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    except pickle.UnpicklingError:
        return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def check_against_fold_plan(run_dir: Path, datamodule) -> None:
    """Where the run saved its fold plan (fold_plan.json), the config must still make the same plan."""
    path = run_dir / FOLD_PLAN
    if not path.is_file():
        return
    saved = read_json(path, FOLD_PLAN_REMEDY, keys=("folds",))
    difference = fold_plan_difference(saved, json.loads(json.dumps(datamodule.fold_plan_record())))
    if difference:
        raise MERError(f"{path}: the config now makes other folds ({difference}); probe with the code version "
                       "that trained the run")


@torch.inference_mode()
def extract(model, loader: DataLoader, device: str, fold_name: str, keep: tuple[str, ...] = (),
            read: Reader = probe_features) -> dict[str, np.ndarray]:
    """``read(model, batch)`` (``model.probe_features``) of every batch, concatenated, plus 'index'
    (the table rows) and 'input:KEY' for each batch entry named in `keep`."""
    model.to(device).eval()
    parts: dict[str, list[np.ndarray]] = {"index": []}
    for batch in loader:
        batch = {key: value.to(device) for key, value in batch.items()}
        model.require_inputs(batch)
        features = read(model, batch)
        if not features:
            raise MERError(f"{type(model).__name__}.probe_features returned no features")
        for name, value in features.items():
            if name == "index" or value.ndim != 2 or len(value) != len(batch["index"]):
                raise MERError(f"{type(model).__name__}.probe_features: feature '{name}' has shape {tuple(value.shape)}; "
                               f"each must be (batch {len(batch['index'])}, D) and not be named 'index'")
            if not torch.isfinite(value).all():
                raise MERError(f"{fold_name}: feature '{name}' has NaN/inf values (did training diverge?)")
            parts.setdefault(name, []).append(value.float().cpu().numpy())
        parts["index"].append(batch["index"].cpu().numpy())
        for key in keep:
            if key not in batch:
                raise MERError(f"{fold_name}: the batches carry no '{key}' (asked for beside the features)")
            parts.setdefault(f"input:{key}", []).append(batch[key].float().cpu().numpy())
    if len(parts) == 1:
        raise MERError(f"{fold_name}: it has no samples to probe")
    if any(len(values) != len(parts["index"]) for values in parts.values()):
        raise MERError(f"{type(model).__name__}.probe_features must return the same feature names for every batch")
    return {name: np.concatenate(values) for name, values in parts.items()}
