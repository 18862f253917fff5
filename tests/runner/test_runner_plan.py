"""The fold runner's planning and bookkeeping: bad input refused before anything is created, fold
selections, config differences, array-task chunks, the DDP prediction merge, a crashing worker."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace

import numpy as np
import pytest
import yaml

from datamodules import SyntheticDataModule
from datamodules.errors import MERError
from experiments.main import mer_main
from experiments.runner.orchestration import run_loso
from experiments.runner.pooling import finish_command
from experiments.runner.fold_selection import format_folds, parse_folds
from experiments.runner.jobs.rank_gather import merge_rank_predictions
from experiments.runner.options import LosoOptions
from experiments.runner.planning import resolve_fold_batch
from experiments.runner.run_plan import RunPlan, config_differences
from experiments.runner.executors.worker import task_folds


class BrokenInputs(SyntheticDataModule):
    """A data source with two unusable input files."""

    def check_inputs(self) -> None:
        raise MERError("2 unusable input files: flow/s01_3.png is 0 bytes; flow/s02_1.png is 64x64, expected 72x72")


class CrashingFold(SyntheticDataModule):
    """Fold 1's worker process dies (as from a segfault or the OOM killer) when its data is set up."""

    def setup(self, stage: str | None = None) -> None:
        if self.fold == 1:
            with open(os.environ["MER_TEST_CRASH_LOG"], "a") as log:
                log.write("crash\n")
            os.kill(os.getpid(), signal.SIGKILL)
        super().setup(stage)


def test_fold_selections():
    assert parse_folds(None, 4) == [0, 1, 2, 3]
    assert parse_folds("0-2,5", 8) == [0, 1, 2, 5] and parse_folds("3", 8) == [3]
    for spec, message in (("2-1", "range 2-1 is empty"), ("", "not a list of fold indices"),
                          ("0-9", r"out of range.*0\.\.3"), ("a", "not a list")):
        with pytest.raises(MERError, match=message):
            parse_folds(spec, 4)
    assert format_folds([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and format_folds([3]) == "3"


def test_config_differences_name_the_keys():
    old = {"trainer": {"max_epochs": 2, "devices": 1}, "model": {"init_args": {"lr": 0.001}}}
    new = {"trainer": {"max_epochs": 1, "devices": 1}, "model": {"init_args": {"lr": 0.001, "depth": 2}}}
    assert config_differences(old, new) == ["model.init_args.depth None → 2", "trainer.max_epochs 2 → 1"]


def test_array_task_takes_its_chunk_of_the_selected_folds():
    plan = RunPlan(config_hash="h", n_folds=10, folds=[0, 2, 4, 6, 8], test_subjects={}, class_names=[],
                   base_seed=0, threads_per_fold=1)
    assert [task_folds(plan, i, 2) for i in range(3)] == [[0, 2], [4, 6], [8]]
    with pytest.raises(MERError, match="task 3 .* has no folds"):
        task_folds(plan, 3, 2)


def test_ddp_predictions_merge_drops_the_sampler_padding():
    """DistributedSampler gives rank r the samples r, r+W, ... and pads the last rank by repeating the
    first samples; the merge keeps each sample once, sorted by table row."""
    index = np.array([10, 11, 12, 13, 14])
    probs = np.random.default_rng(0).random((5, 3))
    padded = np.concatenate([np.arange(5), [0]])  # 5 samples over 2 ranks: 6 slots
    ranks = [(index[padded[r::2]], probs[padded[r::2]]) for r in range(2)]
    merged_index, merged_probs = merge_rank_predictions(ranks)
    np.testing.assert_array_equal(merged_index, index)
    np.testing.assert_array_equal(merged_probs, probs)


def write_config(tmp_path, cache_dir, data_class: str = "datamodules.SyntheticDataModule", **trainer) -> str:
    return f"""
seed_everything: 0
trainer: {{max_epochs: {trainer.get('max_epochs', 1)}, accelerator: cpu, devices: 1}}
model:
  class_path: lightning_modules.MEDN
  init_args: {{image_size: 72, patch_size: 18, embed_dim: 16, num_heads: 2, sparse_rates: [1, 2, 4]}}
data:
  class_path: {data_class}
  init_args: {{n_subjects: 4, clips_per_subject: 5, image_size: 72, batch_size: 8, cache_dir: {cache_dir}}}
"""


@pytest.mark.parametrize("case", ["epochs", "folds", "inputs"])
def test_bad_input_is_refused_before_anything_is_created(case, tmp_path, cache_dir):
    output = tmp_path / "out"
    config = write_config(tmp_path, cache_dir, max_epochs=-1 if case == "epochs" else 1,
                          data_class="tests.runner.test_runner_plan.BrokenInputs" if case == "inputs" else "datamodules.SyntheticDataModule")
    message = {"epochs": "max_epochs -1 means 'train forever'", "folds": "range 2-1 is empty",
               "inputs": "flow/s01_3.png is 0 bytes; flow/s02_1.png is 64x64"}[case]
    with pytest.raises(MERError, match=message):
        run_loso(config, LosoOptions.of(output=output, folds="2-1" if case == "folds" else None))
    assert not output.exists()


def test_cli_rejects_infinite_epochs_in_one_line(tiny_config, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        mer_main(["loso", "--config", str(tiny_config), "--trainer.max_epochs", "-1", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.count("\n") == 0 and "max_epochs -1" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_crashing_worker_is_retried_once_then_named(tmp_path, cache_dir, monkeypatch):
    output = tmp_path / "crash"
    monkeypatch.setenv("MER_TEST_CRASH_LOG", str(tmp_path / "crashes.txt"))
    config = write_config(tmp_path, cache_dir, data_class="tests.runner.test_runner_plan.CrashingFold")
    with pytest.raises(MERError, match=r"1 fold\(s\) failed twice: fold 1 \(subject s01\): worker exit code -9"):
        run_loso(config, LosoOptions.of(output=output, folds="1", workers=2, wandb="disabled", fold_batch="off"))
    assert not (output / "folds" / "fold_001.csv").exists()
    assert (tmp_path / "crashes.txt").read_text().count("crash") == 2


def test_finish_command_repeats_the_executor_options_the_run_was_started_with(tmp_path):
    plan = RunPlan(config_hash="abc", n_folds=4, folds=[0, 1, 2, 3], test_subjects={k: [f"s{k}"] for k in range(4)},
                   class_names=["a", "b"], base_seed=0, threads_per_fold=1, group="run-abc")
    started = LosoOptions.of(workers=2, fold_batch="auto", devices=None, folds_per_device=3)
    command = finish_command(tmp_path, plan, [2, 3], started.executor_arguments())
    assert command.endswith(f"--output {tmp_path} --workers 2 --fold-batch auto --folds 2-3")
    on_gpus = LosoOptions.of(devices="0,1", folds_per_device=2).executor_arguments()
    assert on_gpus == ["--devices", "0,1", "--folds-per-device", "2"]
    assert LosoOptions().executor_arguments() == []


@pytest.mark.parametrize("model, expected, note", [
    ("lightning_modules.MEDN", "auto", None),
    ("lightning_modules.STSTNet", "auto", None),
    ("lightning_modules.LFDTCMEN", "off", "LFDTCMEN's fold-batched results have not been shown equivalent"),
    ("lightning_modules.Xie2022", "off", "Xie2022"),
])
def test_fold_batching_is_the_default_only_for_models_shown_equivalent(tmp_path, capsys, model, expected, note):
    config = yaml.safe_dump({"trainer": {"devices": 1}, "model": {"class_path": model}})
    resolved = resolve_fold_batch(config, LosoOptions.of(), [tmp_path / "new_run"])
    assert resolved.batching.fold_batch == expected
    err = capsys.readouterr().err
    if note is None:
        assert err == ""
    else:
        assert err.startswith("note: folds train one at a time (--fold-batch off): ") and note in err
        assert err.count("\n") == 1


def test_a_resumed_run_keeps_its_recorded_fold_batching_and_a_given_flag_wins(tmp_path, capsys):
    medn = yaml.safe_dump({"trainer": {"devices": 1}, "model": {"class_path": "lightning_modules.MEDN"}})
    plan = RunPlan(config_hash="abc", n_folds=2, folds=[0, 1], test_subjects={0: ["s0"], 1: ["s1"]},
                   class_names=["a", "b"], base_seed=0, threads_per_fold=1)
    for recorded in ("off", "3"):
        run_dir = tmp_path / recorded
        run_dir.mkdir()
        replace(plan, fold_batch=recorded).save(run_dir, medn)
        assert resolve_fold_batch(medn, LosoOptions.of(), [run_dir]).batching.fold_batch == recorded
        assert resolve_fold_batch(medn, LosoOptions.of(fold_batch="auto"), [run_dir]).batching.fold_batch == "auto"
    older = tmp_path / "older"  # a run.json written before the field existed: one fold after another
    older.mkdir()
    plan.save(older, medn)
    values = json.loads((older / "run.json").read_text())
    del values["fold_batch"]
    (older / "run.json").write_text(json.dumps(values))
    assert resolve_fold_batch(medn, LosoOptions.of(), [older]).batching.fold_batch == "off"
    assert capsys.readouterr().err == ""
