"""Planning a run: check everything, then claim the run directory (config.yaml, run.json, fold_plan.json).

Nothing is created before every check passed: the config (it is instantiated once), the
epochs, the fold selection, the executor options, the weight selection (a ModelCheckpoint or
EarlyStopping may look at the inner validation split only) and every input file of the data
source (``datamodule.check_inputs()``). A run directory holds one config and one fold plan only;
its run.json records what every executor of every fold must reuse (seed, threads per fold, W&B
settings), its fold_plan.json every fold's training, validation and test subjects and test samples
(written before any training; a rerun whose plan differs is refused).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from datamodules.errors import MERError

from ..reporting import atomic_write_text, write_json
from .folds import parse_folds
from .options import LosoOptions

PROBE_TRAINER = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
FOLD_PLAN = "fold_plan.json"
SHOWN_SUBJECTS = 4  # test subjects a fold's name lists
MAX_SEED = 2**32 - 1  # Lightning's seed_everything range


@dataclass
class RunPlan:
    """The contents of run.json: everything a fold job needs beside config.yaml."""

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
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, run_dir: Path) -> RunPlan:
        """The plan of an existing run directory (one-line error when it is none)."""
        try:
            data = json.loads((run_dir / "run.json").read_text())
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
        except (OSError, ValueError) as err:
            raise MERError(f"{run_dir} is not a planned LOSO run (run.json/config.yaml unreadable: {err})") from None
        data["test_subjects"] = {int(k): v for k, v in data["test_subjects"].items()}
        return cls(**data, config=config)

    def save(self, run_dir: Path, config_yaml: str) -> None:
        atomic_write_text(run_dir / "config.yaml", config_yaml)
        write_json(run_dir / "run.json", {k: v for k, v in asdict(self).items() if k != "config"})

    def fold_name(self, k: int) -> str:
        """'fold 3 (subject 006)', 'fold 1 (subjects 01, 07)' or 'fold 0 (83 subjects: sub0001, ...)' for messages."""
        subjects = self.test_subjects[k]
        if len(subjects) > SHOWN_SUBJECTS:
            return f"fold {k} ({len(subjects)} subjects: {', '.join(subjects[:SHOWN_SUBJECTS])}, ...)"
        return f"fold {k} (subject{'s' if len(subjects) > 1 else ''} {', '.join(subjects)})"


def config_hash(config: dict[str, Any]) -> str:
    """Hash of the resolved config's values (comments and key order do not count)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'trainer.max_epochs 2 → 1' for every leaf that differs between two configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str)
                for line in config_differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [f"{prefix.rstrip('.')} {old} → {new}"]


def with_trainer(config: dict[str, Any], **trainer: Any) -> dict[str, Any]:
    """A copy of `config` with these trainer settings (they win over the config's own)."""
    config = copy.deepcopy(config)
    config["trainer"] = {**(config.get("trainer") or {}), **trainer}
    return config


def instantiate(config: dict[str, Any], callbacks: list[Any] | None = None):
    """Model, datamodule and Trainer of a resolved config (a dict, as LightningCLI accepts)."""
    from ..lightning_cli import make_cli

    return make_cli(config, run=False, save_config_callback=None, trainer_defaults={"callbacks": callbacks or []})


def check_options(config: dict[str, Any], options: LosoOptions) -> None:
    """Options that cannot work with this config, found before anything runs."""
    trainer = config.get("trainer") or {}
    if trainer.get("max_epochs") == -1:
        raise MERError("--trainer.max_epochs -1 means 'train forever' in Lightning; give a number of epochs")
    if options.workers < 1 or options.folds_per_device < 1:
        raise MERError("--workers and --folds-per-device must be at least 1")
    if options.threads_per_fold is not None and options.threads_per_fold < 1:
        raise MERError("--threads-per-fold must be at least 1")
    parallel = options.devices is not None or options.workers > 1
    if parallel and trainer.get("devices") not in (1, "1", None, "auto"):
        raise MERError(f"--devices/--workers run one fold per device, but the config sets trainer.devices "
                       f"{trainer.get('devices')}; add --trainer.devices 1 or run folds one at a time")
    if options.compile and options.fold_batch == "off":
        raise MERError("--compile compiles the fold-batched training step; add --fold-batch auto (or N), or drop --compile")
    if options.fold_batch != "off":
        from .fold_batch import check_fold_batch

        check_fold_batch(config, options)
    if options.launcher == "slurm":
        from .slurm import check_launch
        from .wandb_runs import sweep_trial

        if sweep_trial() is not None:
            raise MERError("--launcher slurm inside a wandb agent trial returns once the jobs are submitted, so the trial "
                           "would end without its pooled metric; run the agent inside SLURM jobs "
                           "(configs/sweeps/wandb_agent.sbatch) with the local executor (--devices/--workers)")
        check_launch(options)


def default_threads(options: LosoOptions) -> int:
    """Intra-op threads per fold: the CPUs of a machine (or of an array task) over the folds run at once."""
    if options.launcher == "slurm":
        cpus, at_once = options.cpus_per_task, max(1, options.gpus_per_task) * options.folds_per_device
    else:
        cpus = len(os.sched_getaffinity(0))
        at_once = len(parse_devices(options.devices)) * options.folds_per_device if options.devices else options.workers
    return max(1, cpus // at_once)


def parse_devices(spec: str) -> list[str]:
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    if not devices or not all(d.isdigit() for d in devices):
        raise MERError(f"--devices '{spec}' is not a list of GPU indices like '0,1,2,3'")
    return devices


def plan_run(config_yaml: str, options: LosoOptions, run_dir: Path) -> RunPlan:
    """Check the config, the options and the data source; then claim `run_dir` for this config."""
    config = yaml.safe_load(config_yaml)
    if not isinstance(config, dict):
        raise MERError("the LOSO config is not a YAML mapping (give the output of --print_config)")
    check_options(config, options)
    if options.folds is not None:  # its syntax now, its range once the folds are known
        parse_folds(options.folds, n_folds=sys.maxsize)
    if options.devices is not None:
        parse_devices(options.devices)
    probe = instantiate(with_trainer(config, **PROBE_TRAINER))
    datamodule = probe.datamodule
    check_weight_selection(probe.trainer.callbacks, datamodule.val_subjects)
    datamodule.check_inputs()
    datamodule.prepare_data()
    n_folds = datamodule.num_folds
    selected = parse_folds(options.folds, n_folds)
    base_seed = int(config.get("seed_everything") or 0)
    if base_seed + n_folds - 1 > MAX_SEED:  # fold k trains with seed_everything + k
        raise MERError(f"seed_everything {base_seed}: fold {n_folds - 1} would train with seed {base_seed + n_folds - 1}, "
                       f"above {MAX_SEED} (Lightning's range); use a seed <= {MAX_SEED - n_folds + 1}")
    digest = config_hash(config)
    previous = _previous_plan(run_dir, config, digest)
    fold_plan = datamodule.fold_plan_record()
    _check_same_fold_plan(run_dir, fold_plan)
    threads = options.threads_per_fold or default_threads(options)
    if previous is not None and options.threads_per_fold not in (None, previous.threads_per_fold):
        raise MERError(f"{run_dir} trains every fold with {previous.threads_per_fold} threads (run.json); "
                       f"--threads-per-fold {options.threads_per_fold} would change its results")
    plan = RunPlan(
        config_hash=digest,
        n_folds=n_folds,
        folds=selected,
        test_subjects={k: datamodule.fold_test_subjects(k) for k in range(n_folds)},
        class_names=list(datamodule.class_names),
        base_seed=base_seed,
        threads_per_fold=previous.threads_per_fold if previous else threads,
        wandb=options.wandb,
        wandb_project=options.wandb_project,
        group=previous.group if previous else f"{run_dir.name}-{digest}",
        seeds_run=options.seeds is not None,
        compile=options.compile,
        config=config,
    )
    if is_rank_zero():
        (run_dir / "folds").mkdir(parents=True, exist_ok=True)
        write_json(run_dir / FOLD_PLAN, fold_plan)
        plan.save(run_dir, config_yaml)
    return plan


def selecting_callbacks(callbacks: list[Any]) -> list[Any]:
    """The callbacks that look at a logged metric: ModelCheckpoint (chooses weights) and EarlyStopping."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    return [c for c in callbacks if isinstance(c, (ModelCheckpoint, EarlyStopping)) and c.monitor]


def check_weight_selection(callbacks: list[Any], val_subjects: int) -> None:
    """A fold's weights may be chosen (ModelCheckpoint) only on its inner validation split (a val/* metric),
    and training stopped early (EarlyStopping) only on it or on training metrics; never on test data."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    selecting = selecting_callbacks(callbacks)
    for callback in selecting:
        allowed = ("val/",) if isinstance(callback, ModelCheckpoint) else ("val/", "train/")
        if not str(callback.monitor).startswith(allowed):
            raise MERError(f"{type(callback).__name__} monitors '{callback.monitor}': a fold's "
                           f"{'predicting weights may be chosen' if isinstance(callback, ModelCheckpoint) else 'training may stop'} "
                           f"on {' or '.join(a + '*' for a in allowed)} metrics only (e.g. val/uf1 with data.val_subjects > 0)")
        if callback.monitor.startswith("val/") and not val_subjects:
            raise MERError(f"{type(callback).__name__} monitors '{callback.monitor}' but data.val_subjects is 0 (no inner "
                           "validation split): set data.val_subjects to hold out training subjects for validation")
    if sum(isinstance(c, ModelCheckpoint) for c in selecting) > 1:
        raise MERError("several ModelCheckpoint callbacks monitor a metric: keep one, it chooses the weights that predict each fold")


def _check_same_fold_plan(run_dir: Path, fold_plan: dict[str, Any]) -> None:
    """Refuse (one line naming the first difference) a run directory planned with other folds."""
    path = run_dir / FOLD_PLAN
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text())
        if not isinstance(previous, dict) or not isinstance(previous.get("folds"), list) or \
                not all(isinstance(fold, dict) for fold in previous["folds"]):
            raise ValueError("not a fold plan object with a list of fold objects")
    except (OSError, ValueError) as err:
        raise MERError(f"{path} is unreadable ({err}); use another --output or delete that directory") from None
    difference = fold_plan_difference(previous, fold_plan)
    if difference:
        raise MERError(f"{run_dir} was planned with other folds ({FOLD_PLAN}: {difference}); its finished folds would "
                       "not match this plan: use another --output or delete that directory")


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


def is_rank_zero() -> bool:
    """False in the other ranks of a multi-device fold (Lightning reruns the command in each; only rank 0 writes)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _previous_plan(run_dir: Path, config: dict[str, Any], digest: str) -> RunPlan | None:
    """The plan already in `run_dir`, refused (naming the differing keys) when its config differs."""
    if not (run_dir / "run.json").exists():
        return None
    previous = RunPlan.load(run_dir)
    if previous.config_hash != digest:
        changes = config_differences(previous.config, config)
        raise MERError(f"{run_dir} holds a run of another config ({'; '.join(changes) or 'hash ' + previous.config_hash}); "
                       "use another --output or delete that directory")
    return previous
