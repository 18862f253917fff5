"""The `lightning`/`mer` commands: every config parses; bad input gives one line and exit 2; the real
commands print nothing but their result (no Lightning chatter); `mer --help` needs no torch."""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import yaml

from experiments.config_files import read_config
from experiments.main import FOLD_RESUME, SUBCOMMANDS, lightning_main, mer_main
from experiments.lightning_cli import make_cli
from tests.conftest import run_in_process

ROOT = Path(__file__).resolve().parents[2]
# sweeps/: W&B sweep specs; studies/: study specs and overlays (tests/experiments/test_study.py parses them)
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.relative_to(ROOT / "configs").parts[0] not in ("sweeps", "studies"))
BIN = Path(sys.executable).parent


def test_there_are_configs():
    names = {str(p.relative_to(ROOT / "configs")) for p in CONFIGS}
    assert {"medn/synthetic.yaml", "medn/megc2019_cde.yaml", "ststnet/megc2019_cde.yaml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_parses_with_print_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_cli(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    source = read_config(config)  # composed (extends:) and interpolated, as the CLI reads it
    assert printed["model"]["class_path"].endswith(source["model"]["class_path"].split(".")[-1])
    for key, value in source["model"].get("init_args", {}).items():
        assert printed["model"]["init_args"][key] == value, key


def run(command: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed console script `command` (mer or lightning), as a user runs it."""
    return subprocess.run([str(BIN / command), *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **(env or {})})



def one_line_error(code: int, stderr: str) -> str:
    assert code == 2, stderr[-2000:]
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def small_synthetic(cache_dir: Path) -> list[str]:
    """The README's config with fewer, smaller clips; their cache is built here, in-process, so that a
    command's stderr holds only what the command itself says."""
    shrink = {"data": {"n_subjects": 2, "clips_per_subject": 3, "image_size": 72, "cache_dir": cache_dir},
              "model": {"image_size": 72, "patch_size": 18}}
    args = ["--config", "configs/medn/synthetic.yaml", *[arg for group, values in shrink.items() for key, value in values.items()
                                                         for arg in (f"--{group}.init_args.{key}", str(value))]]
    make_cli(args, run=False).datamodule.prepare_data()
    return args


@pytest.mark.slow
def test_fold_999_prints_exactly_the_error(small_synthetic: list[str]):
    """The issue's check: `lightning fit --config configs/medn/synthetic.yaml --data.init_args.fold 999`."""
    args = small_synthetic
    result = run("lightning", "fit", *args, "--data.init_args.fold", "999")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: fold 999 is out of range") and line.endswith("0..1"), result.stderr
    assert result.stdout == ""


def test_missing_checkpoint_is_one_line_naming_it(tmp_path: Path, capsys):
    missing = tmp_path / "epoch=3.ckpt"
    code, _, err = run_in_process(lightning_main, ["test", "--config", str(ROOT / "configs/medn/synthetic.yaml"),
                                               "--ckpt_path", str(missing)], capsys)
    assert one_line_error(code, err) == f"error: checkpoint not found: {missing} (--ckpt_path takes a .ckpt file, 'best' or 'last')"


@pytest.mark.parametrize("subcommand", ["test", "predict"])
def test_evaluating_without_a_checkpoint_is_refused(subcommand, capsys):
    """Without --ckpt_path Lightning would evaluate the freshly initialised weights, silently."""
    code, _, err = run_in_process(lightning_main, [subcommand, "--config", str(ROOT / "configs/medn/synthetic.yaml")], capsys)
    assert one_line_error(code, err).startswith(f"error: {subcommand} needs --ckpt_path FILE")


def test_wrong_config_key_is_one_line(tmp_path, capsys):
    config = yaml.safe_load((ROOT / "configs/ststnet/megc2019_cde.yaml").read_text())
    config["model"]["init_args"]["learning_rate"] = 0.1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = run_in_process(mer_main, ["loso", "--config", str(path), "--output", str(tmp_path / "out")], capsys)
    assert "learning_rate" in one_line_error(code, err)
    assert not (tmp_path / "out").exists()


def test_missing_data_path_is_one_line(tmp_path, capsys):
    code, _, err = run_in_process(mer_main, ["loso", "--config", "configs/ststnet/megc2019_cde.yaml", "--data.init_args.root",
                                         str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")], capsys)
    line = one_line_error(code, err)
    assert "label list not found" in line and "nowhere" in line
    assert not (tmp_path / "out").exists()


def test_fold_out_of_range_is_one_line(cde_root, tmp_path, capsys):
    code, _, err = run_in_process(mer_main, ["fit", "--config", "configs/ststnet/megc2019_cde.yaml",
                                         "--data.init_args.root", str(cde_root), "--data.init_args.fold", "99",
                                         "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path)], capsys)
    line = one_line_error(code, err)
    assert "fold 99 is out of range" in line and "0..67" in line


def test_loso_without_config_names_what_is_missing(capsys):
    code, _, err = run_in_process(mer_main, ["loso"], capsys)
    line = one_line_error(code, err)
    assert "required" in line and "model" in line and "data" in line


def test_mer_help_lists_every_subcommand_without_importing_torch():
    probe = ("import sys\nfrom experiments.main import mer_main\ntry:\n    mer_main(['--help'])\nexcept SystemExit:\n"
             "    print('imported:', sorted(m for m in ('torch', 'lightning', 'numpy', 'pandas') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "imported: []"
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ") and line[4] != " "]
    assert listed == ["fit", "validate", "test", "predict", "loso", "probe", "sweep", "study", "report", "audit", "dataset-info",
                      "prepare"]


def test_unknown_subcommand_lists_all_of_them(capsys):
    line = one_line_error(*run_in_process(mer_main, ["lsoo"], capsys)[::2])
    assert "'lsoo'" in line and all(f"'{name}'" in line for name in SUBCOMMANDS)


def test_loso_usage_lists_the_runner_options(capsys):
    code, out, _ = run_in_process(mer_main, ["loso", "--help"], capsys)
    assert code == 0 and out.startswith("usage: mer loso")
    for option in ("--config", "--trainer.max_epochs", "--folds FOLDS", "--output", "--workers", "--devices",
                   "--launcher {local,slurm}", "--dry-run", "--aggregate-only", "--wandb-project"):
        assert option in out, option
    assert "only these fold indices" in out


QUICK_HELP = ("import sys\nfrom experiments.main import {main}\n{main}({argv!r})\n"
              "print('imported:', sorted(m for m in ('torch', 'lightning') if m in sys.modules))")


@pytest.mark.parametrize("main, argv", [("mer_main", ["loso", "--help"]), ("mer_main", ["loso", "-c", "x.yaml", "-h"]),
                                        ("lightning_main", ["--help"])])
def test_help_of_loso_and_lightning_needs_no_lightning(main, argv):
    """`mer loso --help` and `lightning --help` answer from light parsers (experiments.quick_help)."""
    result = subprocess.run([sys.executable, "-c", QUICK_HELP.format(main=main, argv=argv)], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {'mer loso' if argv[0] == 'loso' else 'lightning'}")
    assert result.stdout.splitlines()[-1] == "imported: []"


def option_strings(parser) -> set[str]:
    """The options the help of `parser` lists (hidden ones, like jsonargparse's --print_shtab, left out)."""
    return {option for action in parser._actions if action.help != argparse.SUPPRESS for option in action.option_strings}


def test_quick_loso_help_lists_the_full_parsers_options():
    """The light `mer loso --help` has every option of the full LightningCLI parser that is not a config key
    (--trainer.*, --model*, --data*, --seed_everything), and invents none."""
    from experiments.loso import parse
    from experiments.quick_help import loso_parser

    full = option_strings(parse(["--config", "configs/medn/synthetic.yaml"]).parser)
    config_keys = {option for option in full if option.startswith(("--trainer", "--model", "--data", "--seed_everything"))}
    assert option_strings(loso_parser()) == full - config_keys
    assert len(config_keys) > 40  # the Trainer's arguments among them


def test_quick_lightning_help_lists_lightnings_subcommands(capsys):
    code, quick, _ = run_in_process(lightning_main, ["--help"], capsys)
    assert code == 0
    code, full, _ = run_in_process(lambda argv: make_cli(argv, prog="lightning"), ["--help"], capsys)
    assert code == 0
    listed = [re.findall(r"^ {4}(fit|validate|test|predict) ", text, flags=re.MULTILINE) for text in (quick, full)]
    assert listed[0] == listed[1] == ["fit", "validate", "test", "predict"]
    assert all(option in text for option in ("-c CONFIG", "--config CONFIG", "--print_config") for text in (quick, full))


def test_loso_hands_the_resolved_config_and_options_to_the_runner(tmp_path, monkeypatch):
    """`mer loso` = the config as `lightning fit --print_config` resolves it (without the runner's
    options) + LosoOptions from the command line; the output defaults to outputs/<folder>-<name>."""
    import experiments.loso

    calls = []
    monkeypatch.setattr(experiments.loso, "run_loso", lambda config_yaml, options: calls.append((config_yaml, options)))
    mer_main(["loso", "--config", "configs/medn/synthetic.yaml", "--trainer.max_epochs", "3", "--folds", "0-2",
              "--workers", "2", "--dry-run", "--wandb", "disabled"])
    (config_yaml, options), = calls
    config = yaml.safe_load(config_yaml)
    assert set(config) == {"seed_everything", "trainer", "model", "data"}
    assert config["trainer"]["max_epochs"] == 3 and config["model"]["init_args"]["embed_dim"] == 32
    assert (options.scope.folds, options.local.workers, options.slurm.dry_run, options.wandb.mode) == ("0-2", 2, True, "disabled")
    assert options.scope.output == Path("outputs/medn-synthetic") and options.slurm.launcher == "local"


def test_prepare_options_come_from_the_datamodule_signature(tmp_path):
    """Options the old hand-written table lacked (--apex-image-size, --fold-side) reach the DataModule."""
    from experiments.prepare import datamodule_from, parse_args
    from tests.helpers.release_replica import write_replica

    replica = write_replica("casme2", tmp_path / "release", n_subjects=1, clips_per_subject=2, breaks=())
    datamodule = datamodule_from(parse_args([
        "casme2", "--root", str(replica.root), "--annotations", str(replica.sheet), "--release", replica.release,
        "--apex-image-size", "20", "--fold-side", "false", "--size", "96", "--per-frame-alignment"]))
    assert datamodule.settings.apex_image_size == 20 and datamodule.fold_side is False
    assert datamodule.settings.alignment.size == 96 and datamodule.settings.alignment.per_frame is True


class PressCtrlC(L.Callback):
    """Ctrl-C as the user presses it: a KeyboardInterrupt in the middle of the first training step."""

    def on_train_batch_start(self, *args) -> None:
        raise KeyboardInterrupt


@pytest.mark.slow
def test_ctrl_c_during_training_exits_130_with_the_resume_line(small_synthetic: list[str], tmp_path: Path):
    """Lightning's Trainer turns Ctrl-C into exit(1); the command reports it like any interrupt."""
    result = run("mer", "fit", *small_synthetic, "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.callbacks+=tests.experiments.test_cli.PressCtrlC", env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 130, result.stderr[-2000:]
    assert result.stderr.splitlines()[-1] == f"interrupted: {FOLD_RESUME}"
    assert "Traceback" not in result.stderr


def test_commands_import_downwards_only():
    """main -> loso/prepare/lightning_cli -> exit_codes: nothing below imports experiments.main, and
    importing main pulls in neither Lightning nor the subcommands' modules."""
    below_cli = [path for path in (ROOT / "experiments").rglob("*.py") if path.relative_to(ROOT).as_posix() != "experiments/main.py"]
    upward = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in below_cli for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "main"
              and (node.level > 0 or node.module == "experiments.main")]
    assert upward == []
    probe = "import sys, experiments.main; print(sorted(m for m in sys.modules if m.startswith(('experiments.', 'lightning'))))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stdout.split() == ["['experiments.exit_codes',", "'experiments.main']"], result.stderr
