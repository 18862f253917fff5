"""Fold-batched training (``--fold-batch``): each fold starts from the weights and computes the loss
of its sequential job, trains only on its own training rows with its own BatchNorm statistics and
gradients, resumes exactly after a kill, and models that cannot be stacked are refused in one line."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from datamodules.fold_batch_data import DeviceResidentFolds
from datamodules.errors import MERError
from experiments.config_files import read_config
from experiments.runner.jobs import FoldGroupJob, pending_jobs
from experiments.runner.jobs import fold_group_job as runner
from experiments.runner.jobs.fold_job import fold_config
from experiments.runner.options import LocalExecutor, LosoOptions
from experiments.runner.orchestration import run_loso
from experiments.runner.paths import FoldPaths, GroupPaths
from experiments.runner.planning import plan_run
from experiments.runner.run_plan import RunConfig, RunPlan, instantiate
from lightning_modules.fold_batch_module import FoldBatch, check_fold_batchable
from tests.conftest import TINY_MEDN, TINY_SYNTHETIC

FOLDS = [0, 1, 2, 3]


def config(cache_dir: Path, model: str = "ststnet", epochs: int = 1) -> dict:
    models = {"ststnet": {"class_path": "lightning_modules.STSTNet",
                          "init_args": {"in_channels": 2, "image_size": 72, "lr": 1e-3}},
              "medn": {"class_path": "lightning_modules.MEDN", "init_args": TINY_MEDN}}
    return {"seed_everything": 3, "trainer": {"max_epochs": epochs, "accelerator": "cpu", "devices": 1},
            "model": models[model],
            "data": {"class_path": "datamodules.SyntheticDataModule",
                     "init_args": {**TINY_SYNTHETIC, "cache_dir": str(cache_dir)}}}


def planned(tmp_path: Path, cache_dir: Path, **kwargs) -> tuple[Path, RunPlan]:
    run_dir = tmp_path / "run"
    return run_dir, plan_run(yaml.safe_dump(config(cache_dir, **kwargs)), LosoOptions.of(output=run_dir, wandb="disabled"),
                             run_dir)


def group(run_dir: Path, plan: RunPlan, vectorize: bool | None = None):
    cli = instantiate(runner.group_config(plan, GroupPaths(run_dir, tuple(FOLDS))))
    data = DeviceResidentFolds(cli.datamodule, FOLDS, torch.device("cpu"))
    return FoldBatch(runner.fold_models(cli.model, cli.datamodule, plan, FOLDS), data, vectorize=vectorize), data


def sequential_model(run_dir: Path, plan: RunPlan, k: int):
    return instantiate(fold_config(plan, run_dir, k)).model


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ststnet", "medn"])
def test_each_fold_starts_as_its_sequential_job(tmp_path: Path, cache_dir: Path, model: str) -> None:
    """Identical initial weights per fold, and in eval mode the identical first-batch loss, batched and looped."""
    run_dir, plan = planned(tmp_path, cache_dir, model=model)
    module, data = group(run_dir, plan)
    data.start_epoch([11, 12, 13, 14])
    batch = data.train_batch(0)
    module.eval()
    module.vectorize = True
    batched = module.fold_losses(batch)[0].detach()
    module.vectorize = False
    looped = module.fold_losses(batch)[0].detach()
    for i, k in enumerate(FOLDS):
        reference = sequential_model(run_dir, plan, k)
        state = module.fold_state(i)
        for name, value in reference.state_dict().items():
            if name in state:
                torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=f"fold {k}: {name}")
        assert set(state) <= set(reference.state_dict())
        reference.eval()
        fold_batch = {key: value[i] for key, value in batch.items()}
        with torch.no_grad():
            expected = reference.total_loss(reference.loss_terms(fold_batch, reference(fold_batch)))
        torch.testing.assert_close(batched[i], expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(looped[i], expected, rtol=1e-4, atol=1e-5)
    assert len({round(float(v), 4) for v in batched}) == len(FOLDS)  # four different folds, not one repeated


@pytest.mark.slow
def test_batchnorm_statistics_and_gradients_stay_in_their_fold(tmp_path: Path, cache_dir: Path) -> None:
    """A training-mode step updates fold i's running statistics exactly as fold i's model on its batch
    (STSTNet normalises before its dropout); a loss of fold 0 alone has gradients in fold 0's slice only."""
    run_dir, plan = planned(tmp_path, cache_dir)
    for vectorize in (True, False):
        module, data = group(run_dir, plan, vectorize=vectorize)
        data.start_epoch([1, 2, 3, 4])
        batch = data.train_batch(0)
        module.train()
        losses, _ = module.fold_losses(batch)
        losses[0].backward()
        for i, k in enumerate(FOLDS):
            reference = sequential_model(run_dir, plan, k).train()
            reference({key: value[i] for key, value in batch.items()})
            state = module.fold_state(i)
            for name, value in reference.state_dict().items():
                if "running" in name:
                    torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-6, msg=f"fold {k}: {name}")
        for param in module.parameters():
            assert param.grad[0].abs().sum() > 0
            assert param.grad[1:].abs().sum() == 0


@pytest.mark.slow
@pytest.mark.parametrize("vectorize", [True, False])
def test_one_stacked_optimiser_steps_each_fold_as_its_own(tmp_path: Path, cache_dir: Path, vectorize: bool) -> None:
    """Three optimiser steps of the group (the model's own Adam over the stacked weights, eval mode so no
    dropout) leave every fold's weights where its sequential model's own optimiser takes them on its batches."""
    run_dir, plan = planned(tmp_path, cache_dir)
    module, data = group(run_dir, plan, vectorize=vectorize)
    module.eval()
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    references = [sequential_model(run_dir, plan, k).eval() for k in FOLDS]
    own = [r.configure_optimizers() for r in references]
    own = [o["optimizer"] if isinstance(o, dict) else o for o in own]
    data.start_epoch([5, 6, 7, 8])
    for step in range(3):
        batch = data.train_batch(step % data.steps_per_epoch)
        optimizer.zero_grad()
        module.fold_losses(batch)[0].sum().backward()
        optimizer.step()
        for i, (reference, opt) in enumerate(zip(references, own)):
            fold_batch = {key: value[i] for key, value in batch.items()}
            opt.zero_grad()
            reference.total_loss(reference.loss_terms(fold_batch, reference(fold_batch))).backward()
            opt.step()
    for i, (k, reference) in enumerate(zip(FOLDS, references)):
        state = module.fold_state(i)
        initial = dict(sequential_model(run_dir, plan, k).named_parameters())
        for name, value in reference.named_parameters():
            torch.testing.assert_close(state[name], value.detach(), rtol=1e-4, atol=1e-5, msg=f"fold {k}: {name}")
            assert not torch.equal(value, initial[name]), f"fold {k}: {name} did not move: the check would be empty"


@pytest.mark.slow
def test_no_held_out_sample_enters_a_fold_batch(tmp_path: Path, cache_dir: Path) -> None:
    """Over epochs every fold's batches hold only its own training rows (each of them every epoch),
    with their identity in that fold; its test batches are exactly its held-out rows."""
    run_dir, plan = planned(tmp_path, cache_dir)
    _, data = group(run_dir, plan)
    table = instantiate(fold_config(plan, run_dir, 0)).datamodule.table
    for epoch in range(3):
        data.start_epoch([epoch * 10 + i for i in range(len(FOLDS))])
        rows = torch.cat([data.train_batch(s)["index"] for s in range(data.steps_per_epoch)], dim=1)
        identity = torch.cat([data.train_batch(s)["identity"] for s in range(data.steps_per_epoch)], dim=1)
        for i, k in enumerate(FOLDS):
            seen = set(table.subject.iloc[rows[i].numpy()].astype(str))
            assert plan.test_subjects[k][0] not in seen
            assert set(rows[i].tolist()) == set(data.train_rows[i].tolist())
            assert (identity[i] >= 0).all()
            test_rows = torch.cat([b["index"] for b in data.test_batches(i)]).numpy()
            assert set(table.subject.iloc[test_rows].astype(str)) == {plan.test_subjects[k][0]}


class Killed(Exception):
    """Stands for a kill right after an epoch-end checkpoint."""


@pytest.mark.slow
@pytest.mark.parametrize("vectorize", [False, True], ids=["loop", "vmap"])
def test_killed_group_resumes_exactly(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                      vectorize: bool) -> None:
    """A fold group killed after its epoch-1 checkpoint and rerun predicts exactly as an uninterrupted one,
    on the CPU's per-fold loop and on the GPU's vmap path (forced here; dropout then per fold inside vmap)."""
    monkeypatch.setattr(runner, "FoldBatch", functools.partial(FoldBatch, vectorize=vectorize))
    save = runner.ThrottledCheckpoint.on_train_epoch_end

    def save_then_die(self, trainer, pl_module) -> None:
        save(self, trainer, pl_module)
        if trainer.current_epoch == 0:
            raise Killed

    predictions = {}
    for name, kill in (("straight", False), ("killed", True)):
        run_dir, plan = planned(tmp_path / name, cache_dir, epochs=2)
        monkeypatch.setattr(runner, "CHECKPOINT_EVERY_S", 0.0)
        if kill:
            with monkeypatch.context() as patch:
                patch.setattr(runner.ThrottledCheckpoint, "on_train_epoch_end", save_then_die)
                with pytest.raises(Killed):
                    FoldGroupJob(run_dir, tuple(FOLDS), size=4).run(plan)
            assert not any(FoldPaths(run_dir, k).done() for k in FOLDS)
            assert GroupPaths(run_dir, tuple(FOLDS)).last_ckpt.is_file()  # the rerun resumes from it
        FoldGroupJob(run_dir, tuple(FOLDS), size=4).run(plan)
        predictions[name] = pd.concat(pd.read_csv(FoldPaths(run_dir, k).csv) for k in FOLDS)
        record = yaml.safe_load(FoldPaths(run_dir, 0).record.read_text())
        assert record["epochs_trained"] == 2 and record["fold_group"] == FOLDS
    pd.testing.assert_frame_equal(predictions["straight"], predictions["killed"])


@pytest.mark.slow
def test_group_with_a_truncated_checkpoint_resumes_from_the_previous_one(
        tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A group killed after its epoch-1 checkpoint whose last.ckpt is then cut short: the rerun names the
    file, resumes from previous.ckpt (epoch 0) and predicts exactly as an uninterrupted group."""
    save = runner.ThrottledCheckpoint.on_train_epoch_end
    monkeypatch.setattr(runner, "CHECKPOINT_EVERY_S", 0.0)

    def save_then_die(self, trainer, pl_module) -> None:
        save(self, trainer, pl_module)
        if trainer.current_epoch == 1:
            raise Killed

    predictions = {}
    for name in ("straight", "truncated"):
        run_dir, plan = planned(tmp_path / name, cache_dir, epochs=3)
        paths = GroupPaths(run_dir, tuple(FOLDS))
        if name == "truncated":
            with monkeypatch.context() as patch:
                patch.setattr(runner.ThrottledCheckpoint, "on_train_epoch_end", save_then_die)
                with pytest.raises(Killed):
                    FoldGroupJob(run_dir, tuple(FOLDS), size=4).run(plan)
            paths.last_ckpt.write_bytes(paths.last_ckpt.read_bytes()[:1000])
            capsys.readouterr()
        FoldGroupJob(run_dir, tuple(FOLDS), size=4).run(plan)
        predictions[name] = pd.concat(pd.read_csv(FoldPaths(run_dir, k).csv) for k in FOLDS)
        assert not (paths.dir / "previous.ckpt").exists()  # dropped once the group's folds are done
    err = capsys.readouterr().err
    assert f"warning: folds 0-3: {paths.last_ckpt} is unreadable (" in err and "resuming from previous.ckpt (epoch 0)" in err
    pd.testing.assert_frame_equal(predictions["straight"], predictions["truncated"])


def test_fold_batch_refused_where_it_cannot_stack(tmp_path: Path) -> None:
    """Xie et al. 2022 (manual optimisation) is refused before anything is written; bad specs too."""
    from lightning_modules import Xie2022

    with pytest.raises(MERError, match="cannot be fold-batched"):
        check_fold_batchable(Xie2022)
    xie = read_config(Path("configs/xie2022/synthetic.yaml"))
    with pytest.raises(MERError, match="Xie2022 .*--fold-batch off"):
        run_loso(yaml.safe_dump(xie), LosoOptions.of(output=tmp_path / "xie", fold_batch="2"))
    with pytest.raises(MERError, match="--fold-batch 'two'"):
        run_loso(yaml.safe_dump(xie), LosoOptions.of(output=tmp_path / "xie", fold_batch="two"))
    with pytest.raises(MERError, match="--fold-batch auto sizes a group to a GPU's free memory"):
        run_loso(yaml.safe_dump(xie), LosoOptions.of(output=tmp_path / "xie", fold_batch="auto", devices="0",
                                                  folds_per_device=2))
    half = {**xie, "trainer": {**xie["trainer"], "precision": "16-mixed"}}
    with pytest.raises(MERError, match="16-bit mixed precision has one gradient scaler for all folds"):
        run_loso(yaml.safe_dump(half), LosoOptions.of(output=tmp_path / "xie", fold_batch="2"))
    with pytest.raises(MERError, match="--compile compiles the fold-batched training step; add --fold-batch"):
        run_loso(yaml.safe_dump(xie), LosoOptions.of(output=tmp_path / "xie", compile=True))
    assert not (tmp_path / "xie").exists()


def test_compile_option_reaches_every_fold_group(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--compile is recorded in run.json (read by workers and SLURM tasks) and handed to the group's FoldBatch."""
    run_dir = tmp_path / "run"
    plan_run(yaml.safe_dump(config(cache_dir)), LosoOptions.of(output=run_dir, wandb="disabled", fold_batch="4", compile=True),
             run_dir)
    seen = {}

    class Built(Exception):
        pass

    def spy(models, data, compile=False):
        seen.update(folds=len(models), compile=compile)
        raise Built

    monkeypatch.setattr(runner, "FoldBatch", spy)
    with pytest.raises(Built):
        runner.train_group(run_dir, FOLDS, RunPlan.load(run_dir))
    assert seen == {"folds": 4, "compile": True}


def test_jobs_reuse_started_groups_and_slurm_tasks_pass_the_option(tmp_path: Path) -> None:
    """A rerun trains a started group (one with a checkpoint) as it was, whatever the new size; the
    rest is cut anew; SLURM array tasks run their chunk with --fold-batch."""
    from experiments.runner.executors.slurm import folds_script

    run_dir = tmp_path / "run"
    started = GroupPaths(run_dir, (2, 3, 4))
    started.dir.mkdir(parents=True)
    started.record.write_text('{"folds": [2, 3, 4]}')
    started.last_ckpt.write_bytes(b"")
    FoldPaths(run_dir, 0).csv.write_text("done")
    assert runner.fold_groups(run_dir, list(range(8)), size=2) == [[2, 3, 4], [1, 5], [6, 7]]
    assert runner.fold_groups(run_dir, [5, 6, 7], size=2) == [[5, 6], [7]]  # not this job's group
    assert runner.job_chunks(list(range(7)), 0, slots=2) == [[0, 1, 2, 3], [4, 5, 6]]
    for size in (0, 2):  # parallel workers: the started group is a job of its own, the rest cut anew
        jobs = pending_jobs(run_dir, list(range(8)), size, slots=2)
        assert [list(job.folds) for job in jobs] == [[2, 3, 4], [1, 5], [6, 7]]
        assert all(isinstance(job, FoldGroupJob) and job.size == size for job in jobs)
    plan = RunPlan(config_hash="x", n_folds=8, folds=list(range(8)), test_subjects={}, class_names=["a"], base_seed=0,
                   threads_per_fold=1, config=RunConfig({"trainer": {"devices": "auto"}, "data": {"init_args": {}}}))
    assert runner.group_config(plan, started).devices == 1  # never a DDP group splitting its folds' steps
    assert "--fold-batch auto" in folds_script(run_dir, list(range(8)), LosoOptions.of(fold_batch="auto"))


@pytest.mark.slow
def test_auto_groups_share_the_host_memory_among_the_local_cpu_workers(tmp_path: Path, cache_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Under --fold-batch auto each of W local CPU workers sizes its group from 1/W of the free memory: with W
    workers and W times the memory a worker picks the size one worker picks alone; the workers' slots say W."""
    from experiments.runner.executors.local import make_slots

    run_dir, plan = planned(tmp_path, cache_dir)
    cli = instantiate(runner.group_config(plan, GroupPaths(run_dir, tuple(FOLDS))))
    cli.datamodule.prepare_data()

    def size(free: float, workers: int) -> int:
        monkeypatch.setattr(runner, "free_memory", lambda device: int(free))
        monkeypatch.setenv(runner.HOST_WORKERS, str(workers))
        return runner.auto_group_size(cli.model, cli.datamodule, plan, FOLDS, torch.device("cpu"))

    frees = [2.0 ** i for i in range(21, 40)]
    alone = [size(free, 1) for free in frees]
    assert alone[0] == 1 and alone[-1] == len(FOLDS)
    assert [size(2 * free, 2) for free in frees] == alone
    assert any(size(free, 2) < n for free, n in zip(frees, alone))
    assert [slot.env for slot in make_slots(LocalExecutor(workers=3))] == [{runner.HOST_WORKERS: "3"}] * 3
    assert all(runner.HOST_WORKERS not in slot.env for slot in make_slots(LocalExecutor(devices="0,1")))
