"""The `lightning`/`mer` commands: every config parses; bad input gives one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments.cli import make_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_there_are_configs():
    names = {str(p.relative_to(ROOT / "configs")) for p in CONFIGS}
    assert {"medn/synthetic.yaml", "medn/megc2019_cde.yaml", "ststnet/megc2019_cde.yaml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_parses_with_print_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_cli(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    source = yaml.safe_load(config.read_text())
    assert printed["model"]["class_path"].endswith(source["model"]["class_path"].split(".")[-1])
    for key, value in source["model"].get("init_args", {}).items():
        assert printed["model"]["init_args"][key] == value, key


def run_mer(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from experiments.cli import mer_main; mer_main()", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def test_wrong_config_key_is_one_line(tmp_path):
    config = yaml.safe_load((ROOT / "configs/ststnet/megc2019_cde.yaml").read_text())
    config["model"]["init_args"]["learning_rate"] = 0.1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    line = one_line_error(run_mer("loso", "--config", str(path), "--output", str(tmp_path / "out")))
    assert "learning_rate" in line
    assert not (tmp_path / "out").exists()


def test_missing_data_path_is_one_line(tmp_path):
    line = one_line_error(run_mer("loso", "--config", "configs/ststnet/megc2019_cde.yaml",
                                  "--data.init_args.root", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")))
    assert "label list not found" in line and "nowhere" in line


def test_fold_out_of_range_is_one_line(cde_root, tmp_path):
    line = one_line_error(run_mer("fit", "--config", "configs/ststnet/megc2019_cde.yaml",
                                  "--data.init_args.root", str(cde_root), "--data.init_args.fold", "99",
                                  "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path)))
    assert "fold 99 is out of range" in line and "0..67" in line


def test_loso_without_config_is_one_line():
    assert "needs --config" in one_line_error(run_mer("loso"))
