"""A sweep SPEC: the W&B sweep YAML that ``wandb agent`` runs, read by ``mer sweep`` for Optuna.

One file serves both. W&B's keys carry the study: ``method`` (grid | bayes | random), ``metric``
(``name`` = a key the trial's run logs, e.g. ``pooled/uf1``; ``goal``), ``parameters`` (``values``,
``value``, ``min``/``max`` with an optional ``distribution``) and ``command``. The trial budget of
bayes/random is ``mer sweep --trials N`` (``wandb agent --count N``); a spec's ``run_cap`` is read
too, but the schema of W&B's local controller (the ``sweeps`` package) refuses that key, so the
shipped specs leave it out.

The command's ``mer loso`` options (``--config FILE`` and any overrides) are every trial's base
options. ``mer sweep`` sets ``--output`` (one folder per trial) and ``--wandb`` itself. In the command,
``${MER_CONFIG:-FILE}`` stands for the config (the environment's ``MER_CONFIG``, else FILE) and
``$MER_ARGS`` for extra base options (word-split), as bash expands them for ``wandb agent``; any other
word naming a variable (the agent's ``${args}``, ``$WANDB_RUN_ID``) is dropped. ``mer sweep SPEC
--config FILE --data.init_args.root DIR ...`` replaces the config and adds overrides for one study
(``SweepSpec.with_base``).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from datamodules.errors import MERError

METHODS = ("grid", "bayes", "random")
DISTRIBUTIONS = ("constant", "categorical", "uniform", "int_uniform", "log_uniform_values")
OWN_OPTIONS = ("--output", "--wandb")  # set per trial by mer sweep
CONFIG_VARIABLE = re.compile(r"^\$\{MER_CONFIG:-([^}]*)\}$")  # ${MER_CONFIG:-configs/medn/synthetic.yaml}
ARGS_VARIABLES = ("$MER_ARGS", "${MER_ARGS}")
LOSS_WEIGHT = "lambda_"  # the models' loss weights (lambda_au, lambda_div, ...): numbers >= 0
LOSO_OVERRIDES = ("--config", "--seed_everything", "--trainer", "--model", "--data", "--optimizer", "--lr_scheduler")


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
        """How many trials the study runs: every grid point, else ``run_cap`` (``--trials``)."""
        if self.method == "grid":
            return math.prod(len(p.values) for p in self.parameters)
        if self.run_cap is None:
            raise MERError(f"{self.path}: method {self.method} needs a trial budget: mer sweep --trials N "
                           "(wandb agent --count N)")
        return self.run_cap

    def with_base(self, overrides: Sequence[str] = (), trials: int | None = None) -> SweepSpec:
        """This spec with a study's own base options: a ``--config`` among `overrides` replaces the
        spec's config, the other overrides follow the spec's options (later options win in LightningCLI);
        `trials` replaces ``run_cap``."""
        words = list(overrides)
        base = list(self.base_args)
        if any(word == "--config" or word.startswith("--config=") for word in words):
            base = _without(base, ("--config",))
        return replace(self, base_args=tuple(base + words),
                       run_cap=trials if trials is not None else self.run_cap)

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
        A drawn float shows 4 significant digits (``lambda_au=-0.7256``) and, where that rounds it, a
        hash of the exact values follows (``~3f2a1c``) so that two trials never share a folder. It also
        names the trial's W&B runs, whose ids must not hold any of ``:;,#?/'``."""
        shown = {name: _short_value(params[name]) for name in self.column_names}
        name = "+".join(f"{column}={shown[name]}" for name, column in self.column_names.items())
        if any(shown[name] != str(params[name]) for name in shown):
            exact = repr(sorted((name, params[name]) for name in shown))
            name += "~" + hashlib.sha1(exact.encode()).hexdigest()[:6]
        return re.sub(r"[:;,#?/'\s]", "_", name)


def _short_value(value: Any) -> str:
    """A float that 4 significant digits do not hold exactly is shown rounded; anything else as is."""
    if isinstance(value, float) and float(f"{value:.4g}") != value:
        return f"{value:.4g}"
    return str(value)


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
    if run_cap is not None and (not isinstance(run_cap, int) or run_cap < 1):
        raise fail(f"run_cap {run_cap!r}: give a positive number of trials (or leave it out and use --trials)")
    return SweepSpec(path=Path(path), name=str(data.get("name") or Path(path).stem), method=method,
                     metric=metric["name"], maximize=goal == "maximize", parameters=parameters,
                     base_args=tuple(loso_options(data.get("command"), fail)), run_cap=run_cap)


def _parameter(name: str, body: Any, fail: Any) -> Parameter:
    """The parameter of a spec entry; a loss weight (``lambda_*``, as the models check it) that could go
    negative is refused here, before any trial runs."""
    parameter = _parsed_parameter(name, body, fail)
    if parameter.short.startswith(LOSS_WEIGHT):
        numbers = [value for value in (*parameter.values, parameter.low) if isinstance(value, (int, float))]
        if any(not value >= 0 for value in numbers):
            raise fail(f"parameter {name}: a loss weight is a number >= 0 (0 turns its term off), "
                       f"but {min(numbers)} is among its values or its min")
    return parameter


def _parsed_parameter(name: str, body: Any, fail: Any) -> Parameter:
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
    return [option for word in _without(words, OWN_OPTIONS) for option in _expand(word)]


def _without(words: list[str], names: tuple[str, ...]) -> list[str]:
    """`words` without the options `names` (``--name value`` or ``--name=value``)."""
    options: list[str] = []
    skip_value = False
    for word in words:
        if skip_value:
            skip_value = False
        elif word in names:
            skip_value = True
        elif not word.startswith(tuple(f"{name}=" for name in names)):
            options.append(word)
    return options


def _expand(word: str) -> list[str]:
    """A command word as bash gives it to ``mer loso``: ``${MER_CONFIG:-FILE}`` and ``$MER_ARGS`` from
    the environment; other words naming a variable are dropped (mer sweep sets them per trial)."""
    config = CONFIG_VARIABLE.match(word)
    if config:
        return [os.environ.get("MER_CONFIG") or config.group(1)]
    if word in ARGS_VARIABLES:
        return shlex.split(os.environ.get("MER_ARGS", ""))
    return [] if "$" in word else [word]


def split_loso_overrides(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """`mer sweep`'s own options, and the LightningCLI options among `words` (``--config FILE``,
    ``--data.init_args.root DIR``, ``--trainer.max_epochs=5``, ...) with their values: the study's
    base overrides (``SweepSpec.with_base``)."""
    own: list[str] = []
    overrides: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        name = word.split("=", 1)[0]
        if name in LOSO_OVERRIDES or name.startswith(tuple(f"{prefix}." for prefix in LOSO_OVERRIDES)):
            overrides.append(word)
            if "=" not in word and index + 1 < len(words) and not words[index + 1].startswith("--"):
                overrides.append(words[index + 1])
                index += 1
        else:
            own.append(word)
        index += 1
    return own, overrides
