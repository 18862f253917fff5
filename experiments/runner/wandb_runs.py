"""The W&B runs of a LOSO run: one per fold and one holding the pooled metrics, also under ``wandb agent``.

Outside a sweep the folds are grouped per run directory (``plan.group``) and the pooled metrics go to
a run named 'pooled'. A ``wandb agent`` starts each trial's command with the trial in the environment
(``wandb_agent.Agent._command_run`` and ``run_agent`` of wandb 0.31): ``WANDB_SWEEP_ID``,
``WANDB_RUN_ID`` (the trial's run), ``WANDB_SWEEP_PARAM_PATH`` (the trial's parameters as a config
file), and ``WANDB_DIR`` (when unset), ``WANDB_ENTITY``/``WANDB_PROJECT`` (when the sweep path names
them). With the first three visible, wandb ignores the ``id``/``project`` of every ``wandb.init`` in
the process, so each fold's WandbLogger would write into the trial's run. Hence, in a trial:

- a fold's process first parks those three variables (``MER_PARKED_WANDB_*``, still inherited by
  spawned workers, SLURM tasks and the aggregation job) and logs the fold to its own run: id
  ``<trial>-fold-<k>``, group ``<trial>``, job type 'fold', in the sweep's project;
- the pooled metrics go to the trial's run itself (its summary ``pooled/uf1`` is the sweep metric),
  initialised in a fresh wandb session that sees the agent's variables exactly as the agent set them;
- a trial that runs several seeds (``--seeds``) logs each seed's pooled metrics to a run of its own
  in the trial's group, and the mean over the seeds to the trial's run (so the sweep metric is the
  seeds' mean, not the last seed's score).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic_files import write_json

if TYPE_CHECKING:  # annotations only: `mer loso --help` reads the options without Lightning
    from .run_plan import RunPlan

AGENT_VARIABLES = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH")
PARKED = "MER_PARKED_"


@dataclass(frozen=True)
class SweepTrial:
    """The ``wandb agent`` trial this process belongs to."""

    sweep_id: str
    run_id: str

    @property
    def group(self) -> str:
        """The W&B group of the trial's fold runs and of the trial's run."""
        return self.run_id


def _agent_value(name: str) -> str | None:
    return os.environ.get(name) or os.environ.get(PARKED + name)


def sweep_trial() -> SweepTrial | None:
    """The agent's trial (its variables set or parked), None outside a sweep."""
    sweep_id, run_id = _agent_value("WANDB_SWEEP_ID"), _agent_value("WANDB_RUN_ID")
    return SweepTrial(sweep_id, run_id) if sweep_id and run_id else None


def forget_dead_wandb_service() -> None:
    """Drop a ``WANDB_SERVICE`` that names a wandb service whose socket is gone (left behind by a session
    torn down since, e.g. between folds): wandb would fail to connect to it instead of starting its own.
    The token is '<version>-<pid>-unix-<socket path>' (wandb 0.31's ``UnixServiceToken``); any other
    value is left to wandb."""
    version_pid_kind_path = os.environ.get("WANDB_SERVICE", "").split("-", 3)
    if len(version_pid_kind_path) == 4 and version_pid_kind_path[2] == "unix" and not Path(version_pid_kind_path[3]).exists():
        del os.environ["WANDB_SERVICE"]


def park_agent_variables() -> None:
    """Hide the agent's variables from wandb in this process (and the processes it starts).

    A wandb session set up while they were visible keeps them, so it is torn down (no run is open
    between two folds)."""
    if not any(name in os.environ for name in AGENT_VARIABLES):
        return
    for name in AGENT_VARIABLES:
        if name in os.environ:
            os.environ[PARKED + name] = os.environ.pop(name)
    import wandb

    wandb.teardown()


@contextlib.contextmanager
def agent_session() -> Iterator[None]:
    """A fresh wandb session seeing the agent's variables as the agent set them; parked again after."""
    import wandb

    park_agent_variables()
    wandb.teardown()
    for name in AGENT_VARIABLES:
        if PARKED + name in os.environ:
            os.environ[name] = os.environ[PARKED + name]
    try:
        yield
    finally:
        park_agent_variables()


def fold_logger_args(plan: RunPlan, run_dir: Path, k: int) -> dict[str, Any]:
    """``WandbLogger`` arguments of fold k: its own run, grouped per run directory or per sweep trial.

    In a trial the fold runs land in the sweep's project (``WANDB_PROJECT`` as the agent set it, else
    ``--wandb-project``) so that they share a project with the trial's run."""
    forget_dead_wandb_service()
    trial = sweep_trial()
    args: dict[str, Any] = {
        "project": plan.wandb_project, "group": plan.group, "job_type": "fold",
        "name": f"fold-{k:03d}-{'-'.join(plan.test_subjects[k])}", "id": f"{plan.group}-fold-{k:03d}",
        "resume": "allow", "save_dir": str(run_dir), "offline": plan.wandb == "offline"}
    if trial is not None:
        park_agent_variables()
        seed = f"{run_dir.name}-" if plan.seeds_run else ""  # seed_N: each seed's folds are runs of their own
        args.update(_trial_project_args(plan), group=trial.group, id=f"{trial.run_id}-{seed}fold-{k:03d}")
    return args


def _trial_project_args(plan: RunPlan) -> dict[str, Any]:
    """Project (and entity) of a trial's own runs: the sweep's (as the agent set them), else ``--wandb-project``."""
    args: dict[str, Any] = {"project": os.environ.get("WANDB_PROJECT") or plan.wandb_project}
    if os.environ.get("WANDB_ENTITY"):
        args["entity"] = os.environ["WANDB_ENTITY"]
    return args


POOLED_RECORD = "mer_pooled.json"  # in a run directory's wandb/: what its 'pooled' run was last given


def pooled_run_id(plan: RunPlan) -> str:
    """The id of a run directory's 'pooled' W&B run (outside a sweep): the same at every aggregation."""
    return f"{plan.group}-pooled"


def _pooled_record(plan: RunPlan, summary: dict[str, float]) -> dict[str, Any]:
    return {"id": pooled_run_id(plan), "project": plan.wandb_project, "mode": plan.wandb, "summary": summary}


def pooled_run_holds(plan: RunPlan, run_dir: Path, summary: dict[str, float]) -> bool:
    """Whether the run directory's 'pooled' run (outside a sweep) was already given `summary`, in the same
    project and mode (its record in ``wandb/``; an unreadable record counts as none): a rerun of the
    aggregation (``--aggregate-only``) then opens no run, so an offline run directory does not gather one
    more ``offline-run-*-pooled`` folder per call. A changed summary is logged to the same run id."""
    path = run_dir / "wandb" / POOLED_RECORD
    if sweep_trial() is not None or not path.is_file():
        return False
    try:
        return json.loads(path.read_text()) == json.loads(json.dumps(_pooled_record(plan, summary)))
    except ValueError:
        return False


def remember_pooled(plan: RunPlan, run_dir: Path, summary: dict[str, float]) -> None:
    """Record that the run directory's 'pooled' run holds `summary` (see :func:`pooled_run_holds`)."""
    if sweep_trial() is None:
        (run_dir / "wandb").mkdir(exist_ok=True)
        write_json(run_dir / "wandb" / POOLED_RECORD, _pooled_record(plan, summary))


@contextlib.contextmanager
def pooled_run(plan: RunPlan, run_dir: Path, config: dict[str, Any]) -> Iterator[Any]:
    """The open W&B run that receives the pooled metrics, finished on exit: the sweep trial's run
    inside ``wandb agent`` (its project, id and parameters are the agent's; for one seed of a seeds
    run, a run of its own in the trial's group), else one 'pooled' run per run directory (a rerun of
    the aggregation resumes it)."""
    trial = sweep_trial()
    if trial is None:
        where = {"project": plan.wandb_project, "group": plan.group, "name": "pooled", "id": pooled_run_id(plan)}
    elif plan.seeds_run:
        park_agent_variables()
        where = {**_trial_project_args(plan), "group": trial.group, "name": f"pooled-{run_dir.name}",
                 "id": f"{trial.run_id}-{run_dir.name}-pooled"}
    else:
        with trial_run(plan, run_dir, config) as run:
            yield run
        return
    with _finished(where, plan, run_dir, config) as run:
        yield run


@contextlib.contextmanager
def trial_run(plan: RunPlan, run_dir: Path, config: dict[str, Any]) -> Iterator[Any]:
    """The sweep trial's own run (the agent's id, project and parameters), open in a fresh wandb session."""
    trial = sweep_trial()
    assert trial is not None, "trial_run outside a wandb agent trial"
    with agent_session(), _finished({"group": trial.group}, plan, run_dir, config) as run:
        yield run


@contextlib.contextmanager
def _finished(where: dict[str, Any], plan: RunPlan, run_dir: Path, config: dict[str, Any]) -> Iterator[Any]:
    import wandb

    forget_dead_wandb_service()
    run = wandb.init(**where, job_type="pooled", resume="allow", dir=str(run_dir), mode=plan.wandb, config=config,
                     reinit="create_new")
    try:
        yield run
    finally:
        run.finish()
