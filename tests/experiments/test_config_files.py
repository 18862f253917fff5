"""Config files as the suite reads them: OmegaConf interpolation (resolved over the whole parsed config,
overrides included), ``extends:`` composition, and a run's saved config.yaml reloading identically."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from experiments.config_files import read_config
from experiments.loso import parse
from experiments.main import mer_main
from experiments.runner.options import LosoOptions
from experiments.runner.planning import plan_run
from experiments.runner.run_plan import RunConfig, RunPlan
from tests.conftest import TINY_MEDN, TINY_SYNTHETIC, run_in_process

ROOT = Path(__file__).resolve().parents[2]


def interpolated_config(tmp_path: Path, cache_dir: Path) -> Path:
    """A tiny MEDN config whose data takes its image size and frames from the model: a base file and one
    that extends it."""
    base = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1},
        "model": {"class_path": "lightning_modules.MEDN", "init_args": {**TINY_MEDN, "seq_len": 3}},
        "data": {"class_path": "datamodules.SyntheticDataModule",
                 "init_args": {**TINY_SYNTHETIC, "cache_dir": str(cache_dir), "num_frames": 4,
                               "image_size": "${model.init_args.image_size}"}},
    }
    (tmp_path / "bases").mkdir()
    (tmp_path / "bases" / "tiny_base.yaml").write_text(yaml.safe_dump(base))
    path = tmp_path / "tiny.yaml"
    path.write_text("extends: bases/tiny_base.yaml\ndata:\n  init_args:\n    clips_per_subject: 4\n")
    return path


def loso_config(*args: str) -> dict:
    return yaml.safe_load(parse(list(args)).fold_config_yaml())


def test_interpolation_follows_overrides_and_is_resolved_in_the_dump(tmp_path: Path, cache_dir: Path) -> None:
    path = interpolated_config(tmp_path, cache_dir)
    config = loso_config("--config", str(path))
    assert config["data"]["init_args"]["image_size"] == config["model"]["init_args"]["image_size"] == 72
    assert config["data"]["init_args"]["clips_per_subject"] == 4 and config["data"]["init_args"]["n_subjects"] == 4
    moved = loso_config("--config", str(path), "--model.init_args.image_size", "48")
    assert moved["data"]["init_args"]["image_size"] == moved["model"]["init_args"]["image_size"] == 48
    assert "${" not in parse(["--config", str(path)]).fold_config_yaml()


def test_composed_casme3_configs_are_the_full_config_with_another_protocol() -> None:
    """casme3_{4,7}class.yaml extend casme3_3class.yaml: parsed, they differ from it in the protocol only."""
    full = loso_config("--config", str(ROOT / "configs/lfd_tcmen/casme3_3class.yaml"))
    for protocol in ("4class", "7class"):
        composed = loso_config("--config", str(ROOT / f"configs/lfd_tcmen/casme3_{protocol}.yaml"))
        assert composed["data"]["init_args"].pop("protocol") == protocol
        assert {**composed["data"]["init_args"], "protocol": "3class"} == full["data"]["init_args"]
        assert {k: v for k, v in composed.items() if k != "data"} == {k: v for k, v in full.items() if k != "data"}
    assert read_config(ROOT / "configs/lfd_tcmen/casme3_7class.yaml")["data"]["init_args"]["num_frames"] == 8


def test_a_missing_base_is_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("extends: nowhere.yaml\n")
    code, _, err = run_in_process(mer_main, ["loso", "--config", str(path), "--output", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "broken.yaml" in err and "extends: nowhere.yaml" in err and "is not a file" in err
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    code, _, err = run_in_process(mer_main, ["loso", "--config", str(loop)], capsys)
    assert code == 2 and "do they extend each other" in err


def test_a_saved_run_config_reloads_identically(tmp_path: Path, cache_dir: Path) -> None:
    """config.yaml of a planned run, given back to mer loso, resolves to the same text and hash (a rerun resumes)."""
    run_dir = tmp_path / "run"
    saved_yaml = parse(["--config", str(interpolated_config(tmp_path, cache_dir))]).fold_config_yaml()
    plan = plan_run(saved_yaml, LosoOptions.of(output=run_dir, wandb="disabled", threads_per_fold=1), run_dir)
    saved = (run_dir / "config.yaml").read_text()
    assert saved == saved_yaml and "${" not in saved
    reloaded = parse(["--config", str(run_dir / "config.yaml")]).fold_config_yaml()
    assert reloaded == saved
    assert RunConfig.from_yaml(reloaded).hash == plan.config_hash == RunPlan.load(run_dir).config_hash
    assert plan_run(reloaded, LosoOptions.of(output=run_dir, wandb="disabled"), run_dir).config_hash == plan.config_hash


def test_an_interpolated_config_trains(tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mer fit` on the composed, interpolated config (image size overridden on the command line) trains an
    epoch; the config Lightning saves beside the logs holds the resolved values."""
    path = interpolated_config(tmp_path, cache_dir)
    code, _, err = run_in_process(mer_main, [
        "fit", "--config", str(path), "--model.init_args.image_size", "48", "--model.init_args.patch_size", "12",
        "--trainer.default_root_dir", str(tmp_path / "fit"), "--trainer.limit_train_batches", "2",
        "--trainer.enable_progress_bar", "false"], capsys)
    assert code == 0, err[-3000:]
    (saved,) = (tmp_path / "fit").rglob("config.yaml")
    config = yaml.safe_load(saved.read_text())
    assert config["data"]["init_args"]["image_size"] == config["model"]["init_args"]["image_size"] == 48
    assert list((tmp_path / "fit").rglob("metrics.csv")), "no training log written"
