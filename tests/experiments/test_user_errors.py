"""Mistakes a new user makes: each is one `error:` line saying what to do, exit code 2, and nothing created
(no output folder, no half-written file)."""

from __future__ import annotations

import errno
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from datamodules.errors import MERError
from experiments.lightning_cli import make_cli
from experiments.main import lightning_main, mer_main
from experiments.output_folder import writing_into
from experiments.runner.options import LocalExecutor
from experiments.sweep.spec import load_spec
from lightning_modules import LFDTCMEN, MEDN, Xie2022
from tests.conftest import run_in_process

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(code: int, stderr: str) -> str:
    assert code == 2, stderr[-2000:]
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    return lines[0]


def loso(config: Path, output: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`mer loso` in this process: its one error line (after checking the exit code and that stdout is empty)."""
    code, out, err = run_in_process(mer_main, ["loso", "--config", str(config), "--output", str(output),
                                               "--wandb", "disabled", *args], capsys)
    assert out == ""
    return one_line_error(code, err)


# -- output folders ----------------------------------------------------------------------------------------
def test_an_output_folder_under_a_file_is_refused(tiny_config: Path, tmp_path: Path, capsys) -> None:
    """Permissions cannot be taken away from root (the tests' user on CI): a path under a regular file fails
    for every user, at the same place."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder\n")
    line = loso(tiny_config, blocker / "run", capsys=capsys)
    assert line == f"error: --output {blocker / 'run'}: {blocker} is a file, not a folder; give another --output"
    assert blocker.read_text() == "a file, not a folder\n" and list(tmp_path.iterdir()) == [blocker]


def test_an_output_folder_nothing_can_be_created_in_is_refused(tiny_config: Path, capsys) -> None:
    """/proc takes no new folders, also for root (as a read-only disk or a folder without write permission)."""
    output = Path("/proc/mer-no-such-folder/run")
    line = loso(tiny_config, output, capsys=capsys)
    assert line.startswith(f"error: --output {output}: cannot create anything in /proc: ")
    assert line.endswith("; give another --output or change its permissions")
    assert not output.parent.exists()


def test_an_os_error_while_an_output_is_written_is_one_line(tmp_path: Path) -> None:
    """A disk that fills up, or permissions that change, after the checks: one line naming the file."""
    with pytest.raises(MERError, match=rf"^--output {tmp_path}: cannot write {tmp_path}/run.json: No space left on device; "
                                       "give another --output$"):
        with writing_into(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run.json"))


def test_report_and_sweep_outputs_are_checked_before_anything_is_written(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, out, err = run_in_process(mer_main, ["report", str(tmp_path), "--output", str(blocker / "table.md")], capsys)
    assert one_line_error(code, err) == (f"error: --output {blocker / 'table.md'}: {blocker} is a file, not a folder; "
                                         "give another --output") and out == ""
    code, _, err = run_in_process(mer_main, ["report", str(tmp_path), "--output", str(tmp_path)], capsys)
    assert one_line_error(code, err) == f"error: --output {tmp_path} is a folder; give the path of a file (in it or elsewhere)"
    code, _, err = run_in_process(mer_main, ["sweep", "configs/sweeps/medn_synthetic_demo.yaml", "--output",
                                             str(blocker / "sweep"), "--dry-run"], capsys)
    assert one_line_error(code, err).endswith(f"{blocker} is a file, not a folder; give another --output")
    assert sorted(tmp_path.iterdir()) == [blocker] and blocker.read_text() == ""


# -- devices -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_accelerator_without_a_gpu_is_one_line(accelerator: str, tiny_config: Path, tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    line = loso(tiny_config, tmp_path / "run", "--trainer.accelerator", accelerator, capsys=capsys)
    assert line == (f"error: --trainer.accelerator {accelerator}: torch sees no CUDA GPU on this machine; "
                    "use --trainer.accelerator auto (a GPU where there is one) or cpu")
    code, out, err = run_in_process(lightning_main, ["fit", "--config", str(tiny_config), "--trainer.accelerator", accelerator,
                                                     "--trainer.default_root_dir", str(tmp_path / "fit")], capsys)
    assert one_line_error(code, err).startswith(f"error: --trainer.accelerator {accelerator}: torch sees no CUDA GPU")
    assert list(tmp_path.iterdir()) == []


def test_mps_without_one_is_one_line(tiny_config: Path, tmp_path: Path, capsys) -> None:
    if torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    line = loso(tiny_config, tmp_path / "run", "--trainer.accelerator", "mps", capsys=capsys)
    assert line == "error: --trainer.accelerator mps: this machine has no Apple MPS device; use --trainer.accelerator auto or cpu"
    assert list(tmp_path.iterdir()) == []


def test_devices_that_are_not_visible_are_refused(tiny_config: Path, tmp_path: Path, capsys,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`--devices 5` on a CPU machine used to train on the CPU, labelled "g5"."""
    if not torch.cuda.is_available():
        line = loso(tiny_config, tmp_path / "run", "--devices", "5", capsys=capsys)
        assert line == "error: --devices 5: torch sees no CUDA GPU on this machine; leave --devices out to train on the CPU"
        code, _, err = run_in_process(mer_main, ["sweep", "configs/sweeps/medn_synthetic_demo.yaml", "--devices", "5",
                                                 "--output", str(tmp_path / "sweep")], capsys)
        assert one_line_error(code, err) == line
        assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    LocalExecutor(devices="0,1").check_visible()
    with pytest.raises(MERError, match=r"^--devices 0,5: GPU\(s\) 5 not visible here \(2 GPU\(s\)\); give ids among 0,1$"):
        LocalExecutor(devices="0,5").check_visible()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # e.g. a SLURM allocation: the workers get these ids
    LocalExecutor(devices="3,2").check_visible()
    with pytest.raises(MERError, match=r"not visible here \(CUDA_VISIBLE_DEVICES=2,3\); give ids among 2,3$"):
        LocalExecutor(devices="0").check_visible()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8c1f,GPU-77aa")  # UUIDs: indices cannot be checked here
    LocalExecutor(devices="0").check_visible()


# -- loss weights ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, weight", [(MEDN, "lambda_au"), (MEDN, "lambda_orth"), (Xie2022, "lambda_div"),
                                           (Xie2022, "lambda_mi_menet"), (Xie2022, "lambda_mi_idnet"),
                                           *[(LFDTCMEN, f"lambda_{t}") for t in ("orth", "rec", "cons", "cycle", "id", "cls", "id_adv")]])
def test_every_models_loss_weights_refuse_negative_values(model: type, weight: str) -> None:
    with pytest.raises(MERError, match=rf"^loss weight\(s\) {weight} -0.5: a loss weight is a number >= 0"):
        model(num_classes=3, num_identities=4, **{weight: -0.5})
    with pytest.raises(MERError, match=rf"{weight} nan"):
        model(num_classes=3, num_identities=4, **{weight: float("nan")})


@pytest.fixture(scope="module")
def prepared_tiny_config(tiny_config: Path) -> Path:
    """tiny_config with its clips prepared here, so that a command's stderr holds only what the command says
    (the model is built after the datamodule, whose label space it is given)."""
    make_cli(["--config", str(tiny_config)], run=False).datamodule.prepare_data()
    return tiny_config


def test_a_negative_loss_weight_on_the_command_line_is_one_line(prepared_tiny_config: Path, tmp_path: Path, capsys) -> None:
    tiny_config = prepared_tiny_config
    line = loso(tiny_config, tmp_path / "run", "--model.init_args.lambda_au", "-1", capsys=capsys)
    assert line == "error: loss weight(s) lambda_au -1.0: a loss weight is a number >= 0 (0 turns its term off)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("body", [{"min": -1.0, "max": -0.5}, {"min": -1.0, "max": 2.0}, {"values": [0.0, -1.0]},
                                  {"value": -2}])
def test_a_sweep_whose_loss_weight_can_go_negative_is_refused(body: dict, tmp_path: Path, capsys) -> None:
    def spec_with(parameter: dict) -> Path:
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump({"method": "random", "metric": {"name": "pooled/uf1", "goal": "maximize"},
                                        "parameters": {"model.init_args.lambda_au": parameter},
                                        "command": ["mer", "loso", "--config", "configs/medn/synthetic.yaml"]}))
        return spec

    spec = spec_with(body)
    with pytest.raises(MERError, match=r"parameter model.init_args.lambda_au: a loss weight is a number >= 0 .* but -"):
        load_spec(spec)
    code, _, err = run_in_process(mer_main, ["sweep", str(spec), "--trials", "2", "--output", str(tmp_path / "out")], capsys)
    assert "a loss weight is a number >= 0" in one_line_error(code, err)
    assert not (tmp_path / "out").exists()
    assert load_spec(spec_with({"min": 0.0, "max": 2.0})).parameters[0].low == 0.0  # the paper's range [0, 2] is fine


# -- misspelt keys -----------------------------------------------------------------------------------------
def config_with(tmp_path: Path, edit: dict[str, dict[str, object]], rename: tuple[str, str] | None = None) -> Path:
    """configs/medn/synthetic.yaml with `edit` merged into its sections (and a top-level key renamed)."""
    config = yaml.safe_load((ROOT / "configs/medn/synthetic.yaml").read_text())
    for section, values in edit.items():
        target = config[section]["init_args"] if section in ("model", "data") else config[section]
        target.update(values)
    if rename:
        config[rename[1]] = config.pop(rename[0])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("edit, rename, expected", [
    ({"model": {"lamda_au": 0.5}}, None, "lightning_modules.MEDN has no key 'lamda_au'; did you mean 'lambda_au'?"),
    ({"trainer": {"max_epoch": 3}}, None, "trainer has no key 'max_epoch'; did you mean 'max_epochs'?"),
    ({"data": {"n_subject": 3}}, None, "datamodules.SyntheticDataModule has no key 'n_subject'; did you mean 'n_subjects'?"),
    ({"data": {"tvl1": {"nscale": 3}}}, None,
     "datamodules.SyntheticDataModule's tvl1 has no key 'nscale'; did you mean 'nscales'?"),
    ({}, ("trainer", "traner"), "the config has no key 'traner'; did you mean 'trainer'?"),
])
def test_a_misspelt_config_key_names_the_closest_one(edit, rename, expected, tmp_path: Path, capsys) -> None:
    """jsonargparse's message repeated every init argument on one line of ~600 characters."""
    line = loso(config_with(tmp_path, edit, rename), tmp_path / "run", capsys=capsys)
    assert line == f"error: {expected}"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, expected", [
    (["--model.init_args.lamda_au", "1"], "lightning_modules.MEDN has no key 'lamda_au'; did you mean 'lambda_au'?"),
    (["--wrkers", "2"], "this command has no option '--wrkers'; did you mean '--workers'?"),
    (["--model", "lightning_modules.MEDNN"],
     "class_path lightning_modules.MEDNN: lightning_modules has no class 'MEDNN'; did you mean 'MEDN'?"),
    (["--model.init_args.colour", "1"],
     "lightning_modules.MEDN has no key 'colour'; its keys: see `mer fit --model.help lightning_modules.MEDN`"),
])
def test_a_misspelt_option_names_the_closest_one(args, expected, tmp_path: Path, capsys) -> None:
    line = loso(ROOT / "configs/medn/synthetic.yaml", tmp_path / "run", *args, capsys=capsys)
    assert line == f"error: {expected}"
    assert not (tmp_path / "run").exists()


def test_a_sweep_spec_given_as_config_is_one_line(tmp_path: Path, capsys) -> None:
    """A sweep spec's ${env} is no key of a config: OmegaConf's 60-line traceback before."""
    line = loso(ROOT / "configs/sweeps/medn_lambda_au.yaml", tmp_path / "run", capsys=capsys)
    assert line.startswith("error: config at command[0]: Interpolation key '..env' not found")
    assert line.endswith("(is this a `lightning fit` config of trainer/model/data?)") and not (tmp_path / "run").exists()


def test_a_batch_size_of_zero_is_one_line(tiny_config: Path, tmp_path: Path, capsys) -> None:
    """It was a ZeroDivisionError in the loop settings."""
    line = loso(tiny_config, tmp_path / "run", "--data.init_args.batch_size", "0", capsys=capsys)
    assert line == "error: data.init_args: batch_size 0 (give at least 1)" and not (tmp_path / "run").exists()


def test_a_file_that_is_no_checkpoint_is_one_line(tiny_config: Path, tmp_path: Path, capsys) -> None:
    """Lightning reads --ckpt_path's hyper-parameters while parsing: a YAML file given by mistake, or a
    truncated checkpoint, was a traceback of torch's unpickler."""
    truncated = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(100)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    for path in (tiny_config, truncated):
        code, _, err = run_in_process(lightning_main, ["fit", "--config", str(tiny_config), "--ckpt_path", str(path),
                                                       "--trainer.default_root_dir", str(tmp_path / "fit")], capsys)
        assert one_line_error(code, err) == (f"error: --ckpt_path {path} is not a checkpoint (a .ckpt file Lightning "
                                             "saved), or it is truncated; give another one")
    assert not (tmp_path / "fit").exists()


def test_lightnings_leafspec_deprecation_is_hidden_and_still_needs_hiding() -> None:
    """Lightning's `_tree_flatten` builds torch's deprecated `LeafSpec`: our commands hide exactly that
    warning (quiet_lightning). If the second half fails, Lightning stopped doing so: drop the filter."""
    from lightning.pytorch.utilities._pytree import _tree_flatten

    from experiments.lightning_cli import quiet_lightning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _tree_flatten([1, 2])
    assert any("LeafSpec" in str(w.message) for w in caught), "Lightning no longer warns: remove LEAFSPEC_DEPRECATION"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()
        _tree_flatten([1, 2])
        warnings.warn("another FutureWarning", FutureWarning)
    assert [str(w.message) for w in caught] == ["another FutureWarning"]
