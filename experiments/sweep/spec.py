"""A sweep SPEC: the W&B sweep YAML that ``wandb agent`` runs, read by ``mer sweep`` for Optuna.

One file serves both. W&B's keys carry the study: ``method`` (grid | bayes | random), ``metric``
(``name`` = a key the trial's run logs, e.g. ``pooled/uf1``; ``goal``), ``parameters`` (``values``,
``value``, ``min``/``max`` with an optional ``distribution``), ``run_cap`` (the trial budget of
bayes/random) and ``command``. The command's ``mer loso`` options (``--config FILE`` and any
overrides) are every trial's base options; ``mer sweep`` sets ``--output`` (one folder per trial) and
``--wandb`` itself and drops anything that names a variable (the agent's ``${args}``, ``$WANDB_RUN_ID``).
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from datamodules.errors import MERError

METHODS = ("grid", "bayes", "random")
DISTRIBUTIONS = ("constant", "categorical", "uniform", "int_uniform", "log_uniform_values")
OWN_OPTIONS = ("--output", "--wandb")  # set per trial by mer sweep


@dataclass(frozen=True)
class Parameter:
    """One swept (or fixed) option of `mer loso`, e.g. ``model.init_args.lambda_au``."""

    name: str
    distribution: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None

    @property
    def short(self) -> str:
        """The last part of the dotted name (``lambda_au``), for folder names, tables and plots."""
        return self.name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    name: str
    method: str
    metric: str
    maximize: bool
    parameters: tuple[Parameter, ...]
    base_args: tuple[str, ...]
    run_cap: int | None

    @property
    def budget(self) -> int:
        """How many trials the study runs: every grid point, else ``run_cap``."""
        if self.method == "grid":
            return math.prod(len(p.values) for p in self.parameters)
        assert self.run_cap is not None
        return self.run_cap

    def trial_args(self, params: dict[str, Any]) -> list[str]:
        """The trial's `mer loso` options in the agent's ``--name=value`` form (base options first)."""
        return [*self.base_args, *(f"--{name}={value}" for name, value in params.items())]

    @property
    def column_names(self) -> dict[str, str]:
        """Parameter name -> its name in folders, tables and plots: the short names when they are
        distinct (``lambda_au``), else the full dotted names."""
        shorts = [p.short for p in self.parameters]
        unique = len(set(shorts)) == len(shorts)
        return {p.name: p.short if unique else p.name for p in self.parameters}

    def trial_name(self, params: dict[str, Any]) -> str:
        """The trial's folder name, e.g. ``lambda_au=0.2+lambda_orth=1.0`` (the same params, the same folder).
        It also names the trial's W&B runs, whose ids must not hold any of ``:;,#?/'``."""
        name = "+".join(f"{column}={params[name]}" for name, column in self.column_names.items())
        return re.sub(r"[:;,#?/'\s]", "_", name)


def load_spec(path: Path) -> SweepSpec:
    """Read and check a sweep YAML; every problem is a one-line MERError naming the file."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise MERError(f"cannot read the sweep spec {path}: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise MERError(f"{path}: a sweep spec is a YAML mapping (method, metric, parameters, command)")

    def fail(text: str) -> MERError:
        return MERError(f"{path}: {text}")

    method = data.get("method")
    if method not in METHODS:
        raise fail(f"method {method!r}: give one of {', '.join(METHODS)}")
    metric = data.get("metric")
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise fail("metric needs a name, e.g. metric: {name: pooled/uf1, goal: maximize}")
    goal = metric.get("goal", "minimize")  # W&B's default
    if goal not in ("minimize", "maximize"):
        raise fail(f"metric goal {goal!r}: give minimize or maximize")
    raw = data.get("parameters")
    if not isinstance(raw, dict) or not raw:
        raise fail("parameters: give at least one, e.g. model.init_args.lambda_au: {values: [0.0, 1.0]}")
    parameters = tuple(_parameter(name, body, fail) for name, body in raw.items())
    if method == "grid":
        continuous = [p.name for p in parameters if not p.values]
        if continuous:
            raise fail(f"a grid takes values/value only; {', '.join(continuous)} has a range (use method bayes or random)")
    run_cap = data.get("run_cap")
    if method != "grid" and (not isinstance(run_cap, int) or run_cap < 1):
        raise fail(f"method {method} needs run_cap: the number of trials (mer sweep stops there)")
    return SweepSpec(path=Path(path), name=str(data.get("name") or Path(path).stem), method=method,
                     metric=metric["name"], maximize=goal == "maximize", parameters=parameters,
                     base_args=tuple(loso_options(data.get("command"), fail)), run_cap=run_cap)


def _parameter(name: str, body: Any, fail: Any) -> Parameter:
    if not isinstance(body, dict):
        raise fail(f"parameter {name}: give values, value or min/max")
    if "value" in body:
        return Parameter(name, "constant", (body["value"],))
    if "values" in body:
        values = body["values"]
        if not isinstance(values, list) or not values:
            raise fail(f"parameter {name}: values must be a non-empty list")
        return Parameter(name, "categorical", tuple(values))
    if "min" not in body or "max" not in body:
        raise fail(f"parameter {name}: give values, value or min/max")
    low, high = body["min"], body["max"]
    integers = isinstance(low, int) and isinstance(high, int)
    distribution = body.get("distribution", "int_uniform" if integers else "uniform")
    if distribution not in DISTRIBUTIONS[2:]:
        raise fail(f"parameter {name}: distribution {distribution!r} is not supported by mer sweep "
                   f"(give one of {', '.join(DISTRIBUTIONS[2:])})")
    if not low < high or (distribution == "log_uniform_values" and low <= 0):
        raise fail(f"parameter {name}: min {low} and max {high} give an empty range")
    return Parameter(name, distribution, (), low, high)


def loso_options(command: Any, fail: Any) -> list[str]:
    """The `mer loso` options of a W&B ``command`` list, or of its shell script item (``bash -c '...'``,
    whose following items are the script's positional arguments), without mer sweep's own options and
    anything naming a variable."""
    if not isinstance(command, list):
        raise fail("command: give the W&B command list that runs `mer loso --config FILE ... ${args}`")
    items = [str(item) for item in command]
    scripts = [shlex.split(item) for item in items if " " in item]
    for words in [*scripts, items]:
        starts = [i for i in range(len(words) - 1) if words[i] == "mer" and words[i + 1] == "loso"]
        if starts:
            return _without_own_options(words[starts[0] + 2:])
    raise fail("command does not run `mer loso`; mer sweep runs each trial as a whole LOSO run")


def _without_own_options(words: list[str]) -> list[str]:
    options: list[str] = []
    skip_value = False
    for word in words:
        if skip_value:
            skip_value = False
        elif word in OWN_OPTIONS:
            skip_value = True
        elif "$" not in word and not word.startswith(tuple(f"{option}=" for option in OWN_OPTIONS)):
            options.append(word)
    return options
