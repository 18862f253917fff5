"""The W&B sweep YAMLs of configs/sweeps/ as ``wandb agent`` runs them, and as ``mer sweep`` reads them.

The agent's own code expands and starts each trial's command (wandb.wandb_agent.Agent._command_run:
``${env}`` -> /usr/bin/env, ``${args}`` -> ``--name=value`` per parameter, WANDB_RUN_ID in the
environment); a stub ``mer`` on PATH records the argv it receives, which our CLI then parses as
``mer loso`` does (experiments.loso.parse: LosoCLI, run=False).
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sweeps
import yaml
from wandb import wandb_agent

from datamodules.errors import MERError
from experiments.loso import parse as parse_loso
from experiments.sweep.spec import load_spec, split_loso_overrides
from tests.conftest import ROOT

SWEEPS = ROOT / "configs" / "sweeps"
SPECS = sorted(SWEEPS.glob("*.yaml"))
BASE = ["--config", "configs/medn/casme3.yaml"]


def agent_argv(spec: dict, args: dict[str, float], run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The argv that `mer` receives when the W&B agent runs trial `run_id` of sweep `spec` with `args`."""
    stub = tmp_path / "bin" / "mer"
    stub.parent.mkdir()
    record = tmp_path / "argv.json"
    stub.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import json, sys; json.dump(sys.argv[1:], open(\"{record}\", \"w\"))' \"$@\"\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{stub.parent}:/usr/bin:/bin")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep1")
    monkeypatch.setenv("WANDB_RUN_ID", "placeholder")  # the agent sets it; monkeypatch restores it
    started: list[wandb_agent.AgentProcess] = []
    real = wandb_agent.AgentProcess
    monkeypatch.setattr(wandb_agent, "AgentProcess", lambda **kw: started.append(real(**kw)) or started[-1])
    agent = wandb_agent.Agent(api=None, queue=None, sweep_id="sweep1")
    agent._sweep_command = list(spec["command"])  # what Agent.run reads from the sweep's config
    agent._command_run({"run_id": run_id, "program": spec["program"],
                        "args": {name: {"value": value} for name, value in args.items()}})
    assert len(started) == 1 and started[0].wait(timeout=60) == 0
    return json.loads(record.read_text())


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_agent_command_parses_with_our_cli_and_sets_the_lambdas(path, tmp_path, monkeypatch):
    spec = yaml.safe_load(path.read_text())
    assert spec["metric"] == {"name": "pooled/uf1", "goal": "maximize"}
    args = {"model.init_args.lambda_au": 0.4, "model.init_args.lambda_orth": 1.6}
    argv = agent_argv(spec, args, "run7", tmp_path, monkeypatch)
    assert argv[0] == "loso" and argv[-2:] == ["--model.init_args.lambda_au=0.4", "--model.init_args.lambda_orth=1.6"]
    monkeypatch.chdir(ROOT)  # the command's --config is relative to the repository root
    cli = parse_loso(argv[1:])
    init = cli.config.model.init_args
    assert (init.lambda_au, init.lambda_orth) == (0.4, 1.6)
    options = cli.options()
    assert options.wandb.mode == "online"  # an offline trial would never report its metric to the sweep
    assert options.scope.output == Path("outputs/wandb-sweeps/run7")  # one run folder per W&B run
    assert "lambda_au: 0.4" in cli.fold_config_yaml()


def test_the_specs_are_medn_figure6(tmp_path):
    """MEDN §V-B4: each λ over {0, 0.2, ..., 2.0} with the other at 1; bayes over [0, 2]."""
    grid = [round(0.2 * i, 1) for i in range(11)]
    for swept, fixed in (("lambda_au", "lambda_orth"), ("lambda_orth", "lambda_au")):
        spec = load_spec(SWEEPS / f"medn_{swept}.yaml")
        values = {p.short: list(p.values) for p in spec.parameters}
        assert spec.method == "grid" and values == {swept: grid, fixed: [1.0]} and spec.budget == 11
        assert spec.base_args == tuple(BASE)
    bayes = load_spec(SWEEPS / "medn_lambda_bayes.yaml")
    assert bayes.method == "bayes" and bayes.base_args == tuple(BASE)
    assert {(p.low, p.high) for p in bayes.parameters} == {(0.0, 2.0)}
    with pytest.raises(MERError, match="needs a trial budget: mer sweep --trials N"):
        bayes.budget  # noqa: B018 (the property raises)
    assert bayes.with_base(trials=30).budget == 30


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_passes_the_schema_of_wandbs_local_controller(path):
    """The `sweeps` package is what W&B's local controller validates a sweep config with; version 0.2
    refuses keys it does not know (run_cap among them)."""
    assert sweeps.schema_violations_from_proposed_config(yaml.safe_load(path.read_text())) == []


def test_the_schema_check_bites():
    spec = {**yaml.safe_load((SWEEPS / "medn_lambda_au.yaml").read_text()), "run_cap": 30}
    assert any("run_cap" in text for text in sweeps.schema_violations_from_proposed_config(spec))


def test_config_and_overrides_of_the_environment_reach_agent_and_mer_sweep_alike(tmp_path, monkeypatch):
    """MER_CONFIG replaces the spec's config and MER_ARGS adds base options: in the command the W&B agent
    runs (bash expands them) and in the base options mer sweep reads from the same spec."""
    path = SWEEPS / "medn_lambda_au.yaml"
    monkeypatch.setenv("MER_CONFIG", "configs/medn/synthetic.yaml")
    monkeypatch.setenv("MER_ARGS", "--trainer.max_epochs 3 --data.init_args.batch_size=4")
    argv = agent_argv(yaml.safe_load(path.read_text()), {"model.init_args.lambda_au": 0.4}, "run8", tmp_path, monkeypatch)
    base = ["--config", "configs/medn/synthetic.yaml", "--trainer.max_epochs", "3", "--data.init_args.batch_size=4"]
    assert argv[1:6] == base
    assert list(load_spec(path).base_args) == base


def test_mer_sweep_takes_a_config_and_overrides_for_every_trial():
    own, overrides = split_loso_overrides(
        ["spec.yaml", "--parallel", "2", "--config", "a.yaml", "--data.init_args.root", "/data/x",
         "--trainer.max_epochs=5", "--model.init_args.lambda_orth", "-1", "--wandb", "disabled"])
    assert own == ["spec.yaml", "--parallel", "2", "--wandb", "disabled"]
    assert overrides == ["--config", "a.yaml", "--data.init_args.root", "/data/x", "--trainer.max_epochs=5",
                         "--model.init_args.lambda_orth", "-1"]
    spec = load_spec(SWEEPS / "medn_lambda_au.yaml").with_base(overrides[:4])
    assert spec.base_args == ("--config", "a.yaml", "--data.init_args.root", "/data/x")  # the spec's config replaced
    kept = load_spec(SWEEPS / "medn_lambda_au.yaml").with_base(["--trainer.max_epochs", "5"])
    assert kept.base_args == (*BASE, "--trainer.max_epochs", "5")
    assert kept.trial_args({"model.init_args.lambda_au": 0.2})[-1] == "--model.init_args.lambda_au=0.2"


def test_plain_command_lists_are_read_too(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "pooled/uar"}, "program": "mer",
        "parameters": {"model.init_args.lambda_au": {"values": [0.0, 1.0]}},
        "command": ["${env}", "mer", "loso", "--config", "a.yaml", "--output=x", "--trainer.max_epochs", "3",
                    "--wandb", "online", "${args}"]}))
    spec = load_spec(path)
    assert spec.base_args == ("--config", "a.yaml", "--trainer.max_epochs", "3") and not spec.maximize
    assert spec.trial_args({"model.init_args.lambda_au": 1.0})[-1] == "--model.init_args.lambda_au=1.0"


@pytest.mark.parametrize("change, words", [
    ({"method": "hyperband"}, "method 'hyperband'"),
    ({"parameters": {"model.init_args.lambda_au": {"min": 0.0, "max": 2.0}}}, "a grid takes values/value only"),
    ({"method": "random", "run_cap": 0}, "run_cap 0"),
    ({"command": ["${env}", "python", "train.py", "${args}"]}, "does not run `mer loso`"),
    ({"metric": {"goal": "maximize"}}, "metric needs a name"),
    ({"parameters": {"model.init_args.lambda_au": {"min": 1.0, "max": 1.0}}, "method": "bayes", "run_cap": 3},
     "empty range"),
])
def test_bad_specs_are_one_line_errors(tmp_path, change, words):
    spec = {**yaml.safe_load((SWEEPS / "medn_lambda_au.yaml").read_text()), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(MERError) as error:
        load_spec(path)
    assert words in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_wandb_agent_sbatch_is_valid_bash():
    script = SWEEPS / "wandb_agent.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "wandb agent" in text and "#SBATCH --array" in text


def test_trial_folder_names_make_valid_wandb_run_ids(tmp_path):
    """A trial's folder name starts the ids of its W&B runs (the runner's group), which W&B validates."""
    import wandb

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "pooled/uf1"}, "program": "mer", "command": ["mer", "loso", "${args}"],
        "parameters": {"model.init_args.lambda_au": {"values": [0.2]}, "data.init_args.protocol": {"values": ["a/b:c"]}}},
        sort_keys=False))
    spec = load_spec(path)
    name = spec.trial_name({"model.init_args.lambda_au": 0.2, "data.init_args.protocol": "a/b:c"})
    assert name == "lambda_au=0.2+protocol=a_b_c"
    drawn = spec.trial_name({"model.init_args.lambda_au": -0.7255932480363376, "data.init_args.protocol": "x"})
    near = spec.trial_name({"model.init_args.lambda_au": -0.7255932480363377, "data.init_args.protocol": "x"})
    assert drawn.startswith("lambda_au=-0.7256+protocol=x~") and len(drawn) == len("lambda_au=-0.7256+protocol=x~") + 6
    assert near != drawn  # rounded for reading, never shared by two trials
    wandb.Settings(run_id=f"{drawn}-0123456789ab-fold-000")
    wandb.Settings(run_id=f"{name}-0123456789ab-fold-000")  # raises on a reserved character
    with pytest.raises(Exception, match="Run ID cannot contain"):
        wandb.Settings(run_id="lambda_au=0.2,lambda_orth=1.0")  # the check bites
