"""Before a sweep starts: its spec is checked against `mer loso` and the output directory is claimed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError

from datamodules.errors import MERError

from ..atomic_files import atomic_write_text, read_yaml
from ..exit_codes import one_line
from ..loso import parse as parse_loso
from ..runner.run_plan import PROBE_TRAINER, RunConfig, instantiate
from .spec import SweepSpec
from .study import SETTINGS, SPEC_COPY, SweepSettings

POOLED_METRICS = ("uf1", "uar", "acc")


def check_spec(spec: SweepSpec, output: Path) -> None:
    """The metric is a pooled one and a trial's options parse as `mer loso` options (names and types),
    so that a typo in the spec fails here in one line, not in every trial. Then the data of that trial
    is checked and prepared once, as `mer loso` plans a run, before workers start (they would all
    prepare the same cache at once)."""
    if not spec.metric.startswith("pooled/") or spec.metric.rsplit("/", 1)[-1] not in POOLED_METRICS:
        raise MERError(f"{spec.path}: metric {spec.metric}: mer sweep scores a trial by a pooled metric of its "
                       "whole LOSO run: pooled/uf1, pooled/uar, pooled/acc or pooled/<dataset>/<uf1|uar|acc>")
    params = {p.name: p.values[0] if p.values else p.low for p in spec.parameters}
    args = [*spec.trial_args(params), "--output", str(output)]
    try:
        cli = parse_loso(args)
    except (ArgumentError, MERError) as err:  # MERError: a misspelt key, with the closest name (misspelt_keys)
        raise MERError(f"{spec.path}: mer loso refuses a trial's options ({' '.join(args)}): {one_line(err)}") from None
    config = RunConfig.from_yaml(cli.fold_config_yaml()).with_trainer(**PROBE_TRAINER)
    datamodule = instantiate(config).datamodule
    datamodule.check_inputs()
    datamodule.prepare_data()
    check_metric_scope(spec, datamodule)


def check_metric_scope(spec: SweepSpec, datamodule: Any) -> None:
    """``pooled/<name>/...`` must name a database of the data or an official test set of its fold plan."""
    parts = spec.metric.removeprefix("pooled/").split("/")
    if len(parts) == 1:
        return
    test_sets = {name for fold in datamodule.fold_plan_record()["folds"] for name in (fold.get("test_sets") or {})}
    known = sorted(set(datamodule.table["dataset"].astype(str)) | test_sets)
    if len(parts) > 2 or parts[0] not in known:
        raise MERError(f"{spec.path}: metric {spec.metric}: <name> in pooled/<name>/<score> is a database or test set "
                       f"of the data: {', '.join(known)}")


def check_output(spec: SweepSpec, output: Path, overrides: list[str]) -> None:
    """A directory holding a study of another spec, or of the same spec with other base options, is
    refused (nothing is written yet)."""
    copy = output / SPEC_COPY
    if copy.exists() and read_yaml(copy, "copy the spec the study was started with there, or use another --output") \
            != yaml.safe_load(spec.path.read_text()):
        raise MERError(f"{output} holds a study of another spec ({copy} differs from {spec.path}); "
                       "use another --output or delete that directory")
    if (output / SETTINGS).exists():
        before = SweepSettings.load(output).loso_overrides
        if before != overrides:
            raise MERError(f"{output} holds a study with the base options {' '.join(before) or '(none)'}, not "
                           f"{' '.join(overrides) or '(none)'}; give the same ones to resume, or another --output")


def claim_output(spec: SweepSpec, output: Path) -> None:
    """Copy the spec into `output`: its workers read that copy."""
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / SPEC_COPY, spec.path.read_text())
