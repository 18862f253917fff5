"""A planned run as data: its resolved config (:class:`RunConfig`), run.json (:class:`RunPlan`) and
fold_plan.json, plus building a config's objects (:func:`instantiate`).

The leaf of the runner: planning, jobs, executors, pooling and the commands that read a run back
(probe, audit, sweep) import it; it imports none of them.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from lightning.fabric.utilities.rank_zero import rank_zero_only

from datamodules.errors import MERError

from ..atomic_files import atomic_write_text, damaged, read_json, read_yaml, write_json
from ..lightning_cli import MERCLI, make_cli
from .checkpoints import use_atomic_checkpoints

PROBE_TRAINER = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
FOLD_PLAN = "fold_plan.json"
FOLD_PLAN_REMEDY = ("delete it and rerun the run's mer loso command: it plans the folds again from the data "
                    "(mer audit then checks the finished folds against them)")
SHOWN_SUBJECTS = 4  # test subjects a fold's name lists
ONE_DEVICE = (1, "1", None, "auto")  # trainer.devices values that train a fold on one device
RUN_JSON_TYPES = {"config_hash": str, "n_folds": int, "folds": list, "test_subjects": dict, "class_names": list,
                  "base_seed": int, "threads_per_fold": int}  # what RunPlan.load checks of run.json's values


@dataclass(frozen=True)
class RunConfig:
    """A run's resolved LightningCLI config (config.yaml as a dict: seed_everything, trainer, model, data)
    with the fields the runner reads or sets by name; ``values`` is never changed in place."""

    values: dict[str, Any]

    @classmethod
    def from_yaml(cls, text: str) -> RunConfig:
        values = yaml.safe_load(text)
        if not isinstance(values, dict):
            raise MERError("the LOSO config is not a YAML mapping (give the output of --print_config)")
        return cls(values)

    @property
    def trainer(self) -> dict[str, Any]:
        return self.values.get("trainer") or {}

    @property
    def data_args(self) -> dict[str, Any]:
        """The datamodule's ``init_args``."""
        return (self.values.get("data") or {}).get("init_args") or {}

    @property
    def model_class_path(self) -> str:
        return str((self.values.get("model") or {}).get("class_path", ""))

    def model_class(self) -> type | None:
        """The class ``model.class_path`` names (None when it cannot be imported: the config's
        instantiation reports that, with the CLI's own message)."""
        module, _, name = self.model_class_path.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            return None

    @property
    def seed(self) -> int:
        """``seed_everything`` (fold k trains with seed + k)."""
        return int(self.values.get("seed_everything") or 0)

    @property
    def max_epochs(self) -> int | None:
        return self.trainer.get("max_epochs")

    @property
    def max_steps(self) -> int | None:
        return self.trainer.get("max_steps")

    @property
    def devices(self) -> Any:
        """``trainer.devices`` as configured (e.g. 1, 'auto', [0, 1])."""
        return self.trainer.get("devices")

    @property
    def one_device(self) -> bool:
        """Whether a fold trains on one device (not a multi-device DDP fold)."""
        return self.devices in ONE_DEVICE

    @property
    def val_subjects(self) -> int:
        """Training subjects held out as the fold's inner validation split."""
        return int(self.data_args.get("val_subjects") or 0)

    @property
    def hash(self) -> str:
        """Hash of the config's values (comments and key order do not count): run.json's ``config_hash``."""
        return hashlib.sha256(json.dumps(self.values, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def with_trainer(self, **trainer: Any) -> RunConfig:
        """A copy with these trainer settings (they win over the config's own)."""
        values = copy.deepcopy(self.values)
        values["trainer"] = {**self.trainer, **copy.deepcopy(trainer)}
        return RunConfig(values)

    def with_seed(self, seed: int) -> RunConfig:
        return RunConfig({**copy.deepcopy(self.values), "seed_everything": seed})

    def for_fold(self, k: int, seed: int) -> RunConfig:
        """A copy that builds fold `k` (``data.init_args.fold``) seeded with `seed`."""
        values = copy.deepcopy(self.values)
        values["seed_everything"] = seed
        values["data"]["init_args"]["fold"] = k
        return RunConfig(values)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.values, sort_keys=False)


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'trainer.max_epochs 2 → 1' for every leaf that differs between two configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str)
                for line in config_differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [f"{prefix.rstrip('.')} {old} → {new}"]


@dataclass
class RunPlan:
    """The contents of run.json: everything a fold job needs beside config.yaml (``config``)."""

    config_hash: str
    n_folds: int
    folds: list[int]
    test_subjects: dict[int, list[str]]
    class_names: list[str]
    base_seed: int
    threads_per_fold: int
    wandb: str = "offline"
    wandb_project: str = "mer-suite"
    group: str = ""
    seeds_run: bool = False  # one seed of ``--seeds``: under ``wandb agent`` the trial's run gets the seeds' mean
    compile: bool = False  # ``--compile``: fold groups torch.compile their batched loss (the latest invocation's choice)
    fold_batch: str = "off"  # ``--fold-batch`` as resolved (the latest invocation's; "off" in run.json files older than it)
    config: RunConfig = field(default_factory=lambda: RunConfig({}), repr=False)

    @classmethod
    def load(cls, run_dir: Path) -> RunPlan:
        """The plan of an existing run directory (one-line error when it is none, or its files are damaged)."""
        run_json, config_yaml = run_dir / "run.json", run_dir / "config.yaml"
        if not (run_json.is_file() and config_yaml.is_file()):
            raise MERError(f"{run_dir} is not a planned LOSO run (no run.json/config.yaml): give a run directory "
                           "that mer loso planned")
        config = read_yaml(config_yaml, "the run's resolved config is lost: restore the file, or start the run "
                                        "again into another --output")
        replan = (f"delete it and plan the run again with its own config: mer loso --config {config_yaml} --output "
                  f"{run_dir} (finished folds are kept)")
        data = read_json(run_json, replan, keys=tuple(f.name for f in fields(cls) if f.name != "config" and
                                                      f.default is MISSING and f.default_factory is MISSING))
        try:
            wrong = [name for name, kind in RUN_JSON_TYPES.items() if not isinstance(data.get(name), kind)]
            if wrong:
                raise TypeError(f"{', '.join(wrong)} of the wrong type")
            data["test_subjects"] = {int(k): list(v) for k, v in data["test_subjects"].items()}
            return cls(**data, config=RunConfig(config))
        except (TypeError, ValueError) as err:  # unknown keys, non-integer fold numbers, values of another type
            raise damaged(run_json, err, replan) from None

    def save(self, run_dir: Path, config_yaml: str) -> None:
        """config.yaml (`config_yaml`, the resolved config as LightningCLI dumps it) and run.json."""
        atomic_write_text(run_dir / "config.yaml", config_yaml)
        write_json(run_dir / "run.json", {f.name: getattr(self, f.name) for f in fields(self) if f.name != "config"})

    def fold_seed(self, k: int) -> int:
        return self.base_seed + k

    def fold_config(self, k: int) -> RunConfig:
        """The run's config building fold `k` with its seed ``seed_everything + k``."""
        return self.config.for_fold(k, self.fold_seed(k))

    def fold_name(self, k: int) -> str:
        """'fold 3 (subject 006)', 'fold 1 (subjects 01, 07)' or 'fold 0 (83 subjects: sub0001, ...)' for messages."""
        subjects = self.test_subjects[k]
        if len(subjects) > SHOWN_SUBJECTS:
            return f"fold {k} ({len(subjects)} subjects: {', '.join(subjects[:SHOWN_SUBJECTS])}, ...)"
        return f"fold {k} (subject{'s' if len(subjects) > 1 else ''} {', '.join(subjects)})"


def instantiate(config: RunConfig, callbacks: list[Any] | None = None) -> MERCLI:
    """Model, datamodule and Trainer of a resolved config, as LightningCLI builds them; the Trainer writes its
    checkpoints atomically (:class:`~.checkpoints.AtomicCheckpointIO`)."""
    cli = make_cli(config.values, run=False, save_config_callback=None, trainer_defaults={"callbacks": callbacks or []})
    use_atomic_checkpoints(cli.trainer)
    return cli


def is_rank_zero() -> bool:
    """False in the other ranks of a multi-device fold (Lightning reruns the command in each; only rank 0 writes)."""
    return getattr(rank_zero_only, "rank", 0) == 0


def check_fold_plan(run_dir: Path, k: int, datamodule: Any) -> None:
    """The datamodule's fold `k` (subjects by role, test samples) must be fold_plan.json's fold `k`."""
    path = run_dir / FOLD_PLAN
    folds = read_json(path, FOLD_PLAN_REMEDY, keys=("folds",))["folds"]
    saved = folds[k] if isinstance(folds, list) and k < len(folds) else None
    if not isinstance(saved, dict):
        raise damaged(path, f"no fold {k}", FOLD_PLAN_REMEDY)
    if saved != datamodule.fold_plan_record()["folds"][k]:
        raise MERError(f"fold {k}: the data's fold differs from {path} (did the data or its annotations change since "
                       "planning?); start a new run with another --output")


def fold_plan_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first difference between two fold plans in words ('fold 2 test_subjects: +s03 -s02'), None if equal."""
    for key in ("kind", "split_seed"):
        if old.get(key) != new.get(key):
            return f"{key} {old.get(key)} → {new.get(key)}"
    old_folds, new_folds = old["folds"], new["folds"]
    if len(old_folds) != len(new_folds):
        return f"{len(old_folds)} folds → {len(new_folds)}"
    for before, after in zip(old_folds, new_folds):
        flat_before, flat_after = _flat_roles(before), _flat_roles(after)
        for role in sorted(set(flat_before) | set(flat_after)):
            if flat_before.get(role) != flat_after.get(role):
                was, now = set(flat_before.get(role, [])), set(flat_after.get(role, []))
                added = [s for s in flat_after.get(role, []) if s not in was]
                removed = [s for s in flat_before.get(role, []) if s not in now]
                change = " ".join([*(f"+{s}" for s in added[:3]), *(f"-{s}" for s in removed[:3])]) or "order"
                return f"fold {after['fold']} {role}: {change}"
    return None


def _flat_roles(fold: dict[str, Any]) -> dict[str, list[str]]:
    """A fold's lists by role, each test set's samples as role 'test_sets/<name>'."""
    flat = {role: list(values) for role, values in fold.items() if isinstance(values, list)}
    flat.update({f"test_sets/{name}": list(samples) for name, samples in (fold.get("test_sets") or {}).items()})
    return flat
