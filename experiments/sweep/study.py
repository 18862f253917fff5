"""The Optuna study of a sweep and the worker loop that pulls its trials.

The study lives in a journal file on the sweep's output directory (``study.journal``, Optuna's
JournalFileBackend with its open-file lock, so processes on several machines of a shared filesystem
can share it). Every worker runs the same loop: under the sweep's ask lock it requeues trials whose
worker died, then takes a queued retry or a new trial while the budget (every grid point, or
``run_cap``) lasts; it runs the trial as a whole ``mer loso`` run into ``trials/<params>/`` and
reports the pooled metric. A running trial's worker stamps a heartbeat (a user attribute) every
``heartbeat`` seconds; a RUNNING trial without one for ``grace_period`` seconds lost its worker: it is
failed and queued again with the same parameters (Optuna's RetryHeartbeatStaleTrialCallback), and its
retry resumes the same LOSO run directory, keeping its finished folds. A worker with nothing to start
waits while other trials run, so it can take over one whose worker dies.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, Trial, TrialState

from datamodules.errors import MERError

from ..atomic_files import damaged, read_json, write_json
from ..loso import main as run_loso_command
from ..runner.pooling import wandb_summary
from ..runner.seed_runs import SUMMARY_JSON as SEEDS_SUMMARY, seeds_metrics
from .spec import Parameter, SweepSpec, load_spec

SPEC_COPY = "spec.yaml"
SETTINGS = "sweep.json"
JOURNAL = "study.journal"
ASK_LOCK = ".ask.lock"
TRIALS = "trials"
OPEN = (TrialState.RUNNING, TrialState.WAITING)


@dataclass
class SweepSettings:
    """How the workers of one sweep run their trials (``sweep.json``; a rerun of mer sweep rewrites it)."""

    loso_overrides: list[str] = field(default_factory=list)
    trials: int | None = None
    wandb: str = "offline"
    heartbeat: float = 30.0
    grace_period: float = 120.0
    max_retry: int = 3
    seed: int = 0
    threads_per_fold: int | None = None

    @classmethod
    def load(cls, output: Path) -> SweepSettings:
        path = output / SETTINGS
        if not path.is_file():
            raise MERError(f"{output} is not a mer sweep output directory (no {SETTINGS}): give the --output of mer sweep")
        remedy = "delete it and rerun the same mer sweep command (it writes the settings again)"
        try:
            return cls(**read_json(path, remedy))
        except TypeError as err:  # keys of another version
            raise damaged(path, err, remedy) from None

    def save(self, output: Path) -> None:
        write_json(output / SETTINGS, asdict(self))

    def spec(self, output: Path) -> SweepSpec:
        """The study's spec as its workers run it: the copied spec with the study's base overrides and budget."""
        return load_spec(output / SPEC_COPY).with_base(self.loso_overrides, self.trials)


class StudyGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its ``study.stop()`` after a trial: our workers call ``tell`` outside
    ``optimize`` (where stop raises) and stop by themselves once the grid's budget is used."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        pass


def make_sampler(spec: SweepSpec, seed: int, worker: int) -> optuna.samplers.BaseSampler:
    """grid -> every grid point once (the same seed in every worker: trial n is grid point n of one
    shuffled order); bayes -> TPE (constant liar: parallel workers spread out); random. The TPE and
    random samplers of worker i draw with seed + i."""
    if spec.method == "grid":
        return StudyGridSampler({p.name: list(p.values) for p in spec.parameters}, seed=seed)
    if spec.method == "bayes":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # constant_liar
            return optuna.samplers.TPESampler(seed=seed + worker, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed + worker)


def open_study(output: Path, spec: SweepSpec, seed: int, worker: int = 0) -> optuna.Study:
    """The sweep's study (created on first use) with worker `worker`'s sampler."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = str(output / JOURNAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        return optuna.create_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec, seed, worker),
                                   direction="maximize" if spec.maximize else "minimize", load_if_exists=True)
    except ValueError as err:  # a line of the journal that is not JSON
        raise damaged(output / JOURNAL, err, "restore it, or delete it to start the study again (the trials' run "
                      f"folders under {TRIALS}/ are kept: a trial of the same parameters finds its finished run)") from None


def suggest(trial: Trial, parameter: Parameter) -> Any:
    if parameter.distribution in ("constant", "categorical"):
        return trial.suggest_categorical(parameter.name, list(parameter.values))
    if parameter.distribution == "int_uniform":
        return trial.suggest_int(parameter.name, int(parameter.low), int(parameter.high))
    return trial.suggest_float(parameter.name, parameter.low, parameter.high,
                               log=parameter.distribution == "log_uniform_values")


def originals(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials drawn from the sampler (not retries of another trial): what counts against the budget."""
    return [t for t in trials if "failed_trial" not in t.system_attrs]


def retry(study: optuna.Study, number: int, max_retry: int | None) -> None:
    """Queue trial `number` again (same parameters and grid point) unless it was retried `max_retry` times."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        # a copy: the callback writes the retry into the trial it is given (not into this process's cache)
        RetryHeartbeatStaleTrialCallback(max_retry)(study, study.get_trials(deepcopy=True)[number])


def reclaim_stale(study: optuna.Study, settings: SweepSettings) -> list[FrozenTrial]:
    """Fail and requeue the RUNNING trials whose heartbeat is older than the grace period."""
    now, stale = time.time(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if now - trial.user_attrs.get("heartbeat", trial.datetime_start.timestamp()) > settings.grace_period:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            retry(study, trial.number, settings.max_retry)
            stale.append(trial)
    return stale


def unretried_failures(study: optuna.Study) -> list[int]:
    """Numbers of the failed trials that have no retry."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t.number for t in trials if t.state == TrialState.FAIL and t.number not in retried]


def requeue_failed(study: optuna.Study) -> list[int]:
    """Queue once more every failed trial that has no retry yet (a rerun of mer sweep resumes them)."""
    failed = unretried_failures(study)
    for number in failed:
        retry(study, number, None)
    return failed


def next_trial(study: optuna.Study, spec: SweepSpec) -> Trial | None:
    """A queued retry, else a new trial while the budget lasts, its parameters drawn; else None."""
    trials = study.get_trials(deepcopy=False)
    if not any(t.state == TrialState.WAITING for t in trials) and len(originals(trials)) >= spec.budget:
        return None
    trial = study.ask()
    params = {p.name: suggest(trial, p) for p in spec.parameters}
    trial.set_user_attr("heartbeat", time.time())
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("run_dir", f"{TRIALS}/{spec.trial_name(params)}")
    return trial


def unfinished(study: optuna.Study, spec: SweepSpec) -> bool:
    """Whether a trial is running or queued, or the budget allows new ones."""
    trials = study.get_trials(deepcopy=False)
    return any(t.state in OPEN for t in trials) or len(originals(trials)) < spec.budget


@contextlib.contextmanager
def heartbeat(trial: Trial, interval: float) -> Iterator[None]:
    """Stamp the trial's heartbeat every `interval` seconds while the body runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                trial.set_user_attr("heartbeat", time.time())
            except (UpdateFinishedTrialError, RuntimeError):  # reclaimed by another worker
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def metric_value(metrics: dict[str, Any], name: str, source: Path) -> float:
    """``pooled/uf1`` -> metrics['uf1']; ``pooled/<name>/uar`` -> the 'uar' of database or official test
    set <name> (metrics['per_dataset'] or metrics['per_test_set']), as ``mer loso`` logs them to W&B."""
    values = wandb_summary(metrics)
    if name not in values:
        scopes = {**metrics.get("per_dataset", {}), **(metrics.get("per_test_set") or {})}
        raise MERError(f"metric {name} is not in {source}: the pooled metrics are pooled/uf1, pooled/uar, "
                       f"pooled/acc and pooled/<name>/<uf1|uar|acc> for {', '.join(scopes)}")
    return float(values[name])


def run_trial(trial: Trial, spec: SweepSpec, settings: SweepSettings, output: Path) -> float:
    """The trial as one whole `mer loso` run into its folder (a retry resumes its finished folds)."""
    run_dir = output / trial.user_attrs["run_dir"]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    args = [*spec.trial_args(trial.params), "--output", str(run_dir), "--wandb", settings.wandb]
    if settings.threads_per_fold and not (run_dir / "run.json").exists():  # a started run keeps its own
        args += ["--threads-per-fold", str(settings.threads_per_fold)]
    print(f"trial {trial.number}: mer loso {' '.join(args)}", flush=True)
    # Two trials of the same parameters (a repeated draw, or a retry while its first worker still runs)
    # take turns on the run folder: the second finds the run finished and only pools it.
    with heartbeat(trial, settings.heartbeat), FileLock(run_dir.with_name(f".{run_dir.name}.lock")):
        run_loso_command(args)
    seeds_file, metrics_file = run_dir / SEEDS_SUMMARY, run_dir / "metrics.json"
    if seeds_file.is_file():  # a trial command with --seeds: scored by the mean over its seeds
        return metric_value(seeds_metrics(read_pooled(seeds_file), "mean"), spec.metric, seeds_file)
    if not metrics_file.is_file():
        raise MERError(f"trial {trial.number}: {run_dir} has no pooled metrics.json (see the lines above)")
    return metric_value(read_pooled(metrics_file), spec.metric, metrics_file)


def read_pooled(path: Path) -> dict[str, Any]:
    """A trial run's pooled metrics.json, or its seeds' summary (seeds_summary.json)."""
    return read_json(path, f"pool the trial's run again: mer loso --aggregate-only {path.parent}",
                     keys=("pooled", "seeds") if path.name == SEEDS_SUMMARY else ("uf1", "uar", "acc"))


def interrupted(err: BaseException) -> bool:
    """Ctrl-C or SIGTERM: a KeyboardInterrupt, or mer loso's exit code 130 after one (a failed audit of
    the pooled run exits 1: a failure)."""
    return isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and err.code == 130)


def work(output: Path, index: int) -> None:
    """One worker: pull and run trials until the study is done (see the module docstring)."""
    settings = SweepSettings.load(output)
    spec = settings.spec(output)
    study = open_study(output, spec, settings.seed, index)
    while True:
        with FileLock(output / ASK_LOCK):
            for trial in reclaim_stale(study, settings):
                print(f"trial {trial.number} ({trial.user_attrs.get('run_dir')}) lost its worker "
                      f"{trial.user_attrs.get('worker')}: queued again, its LOSO run resumes", flush=True)
            trial = next_trial(study, spec)
            busy = trial is not None or unfinished(study, spec)
        if trial is None:
            if not busy:
                return
            time.sleep(settings.heartbeat)
            continue
        try:
            value = run_trial(trial, spec, settings, output)
        except BaseException as err:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            if interrupted(err):  # Ctrl-C / SIGTERM: queued again at once, its LOSO run resumes
                retry(study, trial.number, None)
            raise
        try:
            study.tell(trial, value)
        except UpdateFinishedTrialError:
            print(f"trial {trial.number} finished after another worker had taken it over (no heartbeat for "
                  f"{settings.grace_period:g} s); its retry finds the finished run", flush=True)
