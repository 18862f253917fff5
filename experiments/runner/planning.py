"""Planning a run: check everything, then claim the run directory (config.yaml, run.json, fold_plan.json).

Nothing is created before every check passed: the options (:meth:`LosoOptions.check`), the config
against them (it is instantiated once), the epochs, the fold selection, the weight selection (a
ModelCheckpoint or EarlyStopping may look at the inner validation split only) and every input file
of the data source (``datamodule.check_inputs()``). A run directory holds one config and one fold
plan only; its run.json records what every executor of every fold must reuse (seed, threads per
fold, W&B settings), its fold_plan.json every fold's training, validation and test subjects and
test samples (written before any training; a rerun whose plan differs is refused).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from datamodules.errors import MERError

from ..atomic_files import damaged, read_json, write_json
from ..output_folder import writing_into
from .fold_selection import MAX_SEED, parse_folds
from .jobs.fold_group_job import check_fold_batch
from .jobs.weight_selection import check_weight_selection
from .options import LosoOptions
from .run_plan import FOLD_PLAN, FOLD_PLAN_REMEDY, PROBE_TRAINER, RunConfig, RunPlan, config_differences, fold_plan_difference, \
    instantiate, is_rank_zero


def check_config_for_options(config: RunConfig, options: LosoOptions) -> None:
    """What cannot work with this config under these options, found before anything runs."""
    if config.max_epochs == -1:
        raise MERError("--trainer.max_epochs -1 means 'train forever' in Lightning; give a number of epochs")
    if options.local.parallel and not config.one_device:
        raise MERError(f"--devices/--workers run one fold per device, but the config sets trainer.devices "
                       f"{config.devices}; add --trainer.devices 1 or run folds one at a time")
    if options.batching.size is not None:
        check_fold_batch(config)


def resolve_fold_batch(config_yaml: str, options: LosoOptions, run_dirs: list[Path]) -> LosoOptions:
    """`options` with the fold-batching mode decided once for every run directory of the command (a run,
    or each seed of ``--seeds``): ``--fold-batch`` when given; else the mode the first existing run.json
    records, so that a resumed run goes on as it started; else ``auto`` where the model, trainer, data and
    executor allow it and the model's fold-batched results were shown equivalent
    (``MERClassifier.fold_batch_equivalence``), else ``off`` with one line on stderr saying why."""
    if options.batching.given:
        return options
    recorded = [RunPlan.load(run_dir).fold_batch for run_dir in run_dirs if (run_dir / "run.json").is_file()]
    if recorded:
        mode = recorded[0]
    else:
        reason = fold_batch_refusal(RunConfig.from_yaml(config_yaml), options)
        mode = "off" if reason else "auto"
        if reason:
            print(f"note: folds train one at a time (--fold-batch off): {reason}", file=sys.stderr)
    return replace(options, batching=replace(options.batching, fold_batch=mode))


def fold_batch_refusal(config: RunConfig, options: LosoOptions) -> str | None:
    """Why the run should not be fold-batched by default (None: it can be)."""
    try:
        check_fold_batch(config)
        replace(options, batching=replace(options.batching, fold_batch="auto")).check_fold_batch_executor()
    except MERError as err:
        return str(err).split(";")[0].removeprefix("--fold-batch: ")
    model_class = config.model_class()
    if model_class is not None and getattr(model_class, "fold_batch_equivalence", None) is None:
        return f"{model_class.__name__}'s fold-batched results have not been shown equivalent to one fold after another"
    return None


def plan_run(config_yaml: str, options: LosoOptions, run_dir: Path) -> RunPlan:
    """Check the config, the options and the data source; then claim `run_dir` for this config (the
    fold-batching mode resolved here unless the caller did: :func:`resolve_fold_batch`)."""
    options = resolve_fold_batch(config_yaml, options, [run_dir])
    config = RunConfig.from_yaml(config_yaml)
    options.check()
    check_config_for_options(config, options)
    digest = config.hash
    previous = _previous_plan(run_dir, config, digest)  # before the data is prepared: a refused rerun costs nothing
    probe = instantiate(config.with_trainer(**PROBE_TRAINER))
    datamodule = probe.datamodule
    check_weight_selection(probe.trainer.callbacks, datamodule.val_subjects)
    datamodule.check_inputs()
    datamodule.prepare_data()
    n_folds = datamodule.num_folds
    selected = parse_folds(options.scope.folds, n_folds)
    if config.seed + n_folds - 1 > MAX_SEED:  # fold k trains with seed_everything + k
        raise MERError(f"seed_everything {config.seed}: fold {n_folds - 1} would train with seed {config.seed + n_folds - 1}, "
                       f"above {MAX_SEED} (Lightning's range); use a seed <= {MAX_SEED - n_folds + 1}")
    fold_plan = datamodule.fold_plan_record()
    _check_same_fold_plan(run_dir, fold_plan)
    threads = options.local.threads_per_fold
    if previous is not None and threads not in (None, previous.threads_per_fold):
        raise MERError(f"{run_dir} trains every fold with {previous.threads_per_fold} threads (run.json); "
                       f"--threads-per-fold {threads} would change its results")
    plan = RunPlan(
        config_hash=digest,
        n_folds=n_folds,
        folds=selected,
        test_subjects={k: datamodule.fold_test_subjects(k) for k in range(n_folds)},
        class_names=list(datamodule.class_names),
        base_seed=config.seed,
        threads_per_fold=previous.threads_per_fold if previous else threads or options.default_threads(),
        wandb=options.wandb.mode,
        wandb_project=options.wandb.project,
        group=previous.group if previous else f"{run_dir.name}-{digest}",
        seeds_run=options.scope.seeds is not None,
        compile=options.batching.compile,
        fold_batch=str(options.batching.fold_batch or "off"),
        config=config,
    )
    if is_rank_zero():
        with writing_into(run_dir):
            (run_dir / "folds").mkdir(parents=True, exist_ok=True)
            write_json(run_dir / FOLD_PLAN, fold_plan)
            plan.save(run_dir, config_yaml)
    return plan


def _check_same_fold_plan(run_dir: Path, fold_plan: dict[str, Any]) -> None:
    """Refuse (one line naming the first difference) a run directory planned with other folds."""
    path = run_dir / FOLD_PLAN
    if not path.is_file():
        return
    previous = read_json(path, FOLD_PLAN_REMEDY, keys=("folds",))
    if not isinstance(previous["folds"], list) or not all(isinstance(fold, dict) for fold in previous["folds"]):
        raise damaged(path, "not a list of fold objects", FOLD_PLAN_REMEDY)
    difference = fold_plan_difference(previous, fold_plan)
    if difference:
        raise MERError(f"{run_dir} was planned with other folds ({FOLD_PLAN}: {difference}); its finished folds would "
                       "not match this plan: use another --output or delete that directory")


def _previous_plan(run_dir: Path, config: RunConfig, digest: str) -> RunPlan | None:
    """The plan already in `run_dir`, refused (naming the differing keys) when its config differs."""
    if not (run_dir / "run.json").exists():
        return None
    previous = RunPlan.load(run_dir)
    if previous.config_hash != digest:
        changes = config_differences(previous.config.values, config.values)
        raise MERError(f"{run_dir} holds a run of another config ({'; '.join(changes) or 'hash ' + previous.config_hash}); "
                       "use another --output or delete that directory")
    return previous
