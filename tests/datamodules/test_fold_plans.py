"""Fold plans: each builder (LOSO, subject k-fold, official split) gives every subject one role per fold;
subjects are text; DFME's MEGC 2024 split from the shared sheets; fold_plan.json is saved before training
and a rerun with another plan is refused; an official split's metrics per test set and a checkpoint
chosen on the inner validation split, recorded with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from datamodules import DFMEDataModule, SyntheticDataModule
from datamodules.errors import MERError
from datamodules.fold_plans import FoldPlan, kfold_plan, loso_plan, official_plan
from experiments.loso import parse as parse_loso
from experiments.runner.orchestration import run_loso
from experiments.runner.options import LosoOptions
from experiments.runner.jobs.weight_selection import check_weight_selection
from experiments.runner.planning import plan_run
from tests.conftest import require_shared
from tests.datamodules.test_folds import TableDataModule
from tests.runner.test_loso_run import macro_scores

SUBJECTS = ["006", "6", "sub2", "sub10", "007", "013", "014", "015"]
COUNTS = [30, 2, 3, 25, 4, 18, 6, 9]
DFME = "data/annotations/dfme"


def roles(plan: FoldPlan) -> list[tuple[set[str], set[str], set[str]]]:
    return [(set(f.train_subjects), set(f.val_subjects), set(f.test_subjects)) for f in plan.folds]


def assert_one_role_per_subject(plan: FoldPlan, subjects: set[str]) -> None:
    for train, val, test in roles(plan):
        assert not train & val and not train & test and not val & test
        assert train | val | test == subjects


def test_loso_builder_tests_each_subject_once_in_natural_order() -> None:
    plan = loso_plan(SUBJECTS, val_subjects=2, seed=3)
    assert plan.kind == "loso" and len(plan.folds) == len(SUBJECTS)
    assert [f.test_subjects for f in plan.folds] == [("006",), ("6",), ("007",), ("013",), ("014",), ("015",),
                                                      ("sub2",), ("sub10",)]
    assert_one_role_per_subject(plan, set(SUBJECTS))
    assert all(len(f.val_subjects) == 2 for f in plan.folds)
    assert plan == loso_plan(list(reversed(SUBJECTS)), val_subjects=2, seed=3)  # seeded, order-free


def test_kfold_builder_is_balanced_and_tests_each_subject_once() -> None:
    counts = dict(zip(SUBJECTS, COUNTS))
    plan = kfold_plan(counts, k=3, val_subjects=1, seed=0)
    assert plan.kind == "kfold" and len(plan.folds) == 3
    assert_one_role_per_subject(plan, set(SUBJECTS))
    tested = sorted(s for f in plan.folds for s in f.test_subjects)
    assert tested == sorted(SUBJECTS)
    totals = [sum(counts[s] for s in f.test_subjects) for f in plan.folds]
    assert sum(totals) == sum(COUNTS) and max(totals) - min(totals) <= max(COUNTS)
    assert max(totals) - min(totals) <= 3, totals  # 97 samples in 3 folds: 32/32/33 is reachable greedily
    with pytest.raises(MERError, match=r"k_folds=9 is invalid: use 2\.\.8"):
        kfold_plan(counts, k=9)


def test_official_builder_trains_on_training_and_tests_every_other_set() -> None:
    subjects = ["a1", "a1", "a2", "a3", "b1", "b2", "b2", "c1"]
    sets = ["training", "training", "training", "training", "testA", "testA", "testA", "testB"]
    plan = official_plan(subjects, sets, val_subjects=1, seed=0)
    assert plan.kind == "official" and len(plan.folds) == 1
    (train, val, test), = roles(plan)
    assert train | val == {"a1", "a2", "a3"} and len(val) == 1 and test == {"b1", "b2", "c1"}
    assert_one_role_per_subject(plan, set(subjects))
    record = plan.record(np.array([f"d/x{i}" for i in range(8)]), np.array(subjects), np.array(sets, dtype=object))
    assert record["folds"][0]["test_samples"] == [f"d/x{i}" for i in range(4, 8)]
    assert record["folds"][0]["test_sets"] == {"testA": ["d/x4", "d/x5", "d/x6"], "testB": ["d/x7"]}
    with pytest.raises(MERError, match="not subject-disjoint: subject\\(s\\) a2 appear in 'training' and in a test set"):
        official_plan(["a1", "a2", "a2"], ["training", "training", "testA"])
    with pytest.raises(MERError, match="needs samples of the 'training' set and of at least one test set"):
        official_plan(["a1", "a2"], ["testA", "testB"])


def test_subjects_are_text_006_is_not_6() -> None:
    dm = TableDataModule(["006", "006", "006", "6", "6", 6, "7"])  # an int 6 in the table reads as subject '6'
    assert dm.subjects == ["006", "6", "7"] and dm.num_folds == 3
    subject_of = dm.row_subjects
    for name in ("6", 6):
        dm.test_subject = name
        assert dm.test_subjects == ["6"] and set(subject_of[dm.split()["test"]]) == {"6"}
        assert len(dm.split()["test"]) == 3
    dm.test_subject = "006"
    assert dm.fold_index == 0 and len(dm.split()["test"]) == 3
    assert set(dm.fold_plan().folds[1].train_subjects) == {"006", "7"}


def test_official_split_and_k_folds_exclude_each_other() -> None:
    class Official(TableDataModule):
        def official_sets(self) -> np.ndarray:
            return np.where(self.row_subjects == "c", "testA", "training").astype(object)

    dm = Official(["a", "b", "c"], k_folds=2)
    with pytest.raises(MERError, match="k_folds=2 and the official split exclude each other"):
        dm.split()
    dm.k_folds = None
    assert dm.num_folds == 1 and dm.test_subjects == ["c"]


# ---------------------------------------------------------------- DFME's official split (MEGC 2024)

class SheetsOnlyDFME(DFMEDataModule):
    """DFME's sample table straight from the sheets (no release frames needed to plan the folds)."""

    def load_table(self) -> pd.DataFrame:
        return self.samples


@pytest.mark.slow
def test_dfme_official_split_has_the_megc2024_counts() -> None:
    sheets = require_shared(DFME)
    dm = SheetsOnlyDFME(root=str(sheets), official_split=True, val_subjects=20, split_seed=4)
    split, sets, subject_of = dm.split(), dm.official_sets(), dm.row_subjects
    assert dm.num_folds == 1 and dm.fold_plan().kind == "official"
    assert len(split["train"]) + len(split["val"]) == 1856 and len(split["test"]) == 474 + 299
    assert (sets[split["train"]] == "training").all() and (sets[split["val"]] == "training").all()
    assert (sets[split["test"]] == "testA").sum() == 474 and (sets[split["test"]] == "testB").sum() == 299
    train, val, test = (set(subject_of[split[name]]) for name in ("train", "val", "test"))
    assert len(train | val) == 176 and len(val) == 20 and len(test) == 42 + 41 and not (train | val) & test
    assert len(set(subject_of[sets == "testA"])) == 42 and len(set(subject_of[sets == "testB"])) == 41
    fold = dm.fold_plan_record()["folds"][0]
    assert {name: len(keys) for name, keys in fold["test_sets"].items()} == {"testA": 474, "testB": 299}
    assert len(fold["test_samples"]) == 773 and fold["test_samples"][0].startswith("dfme/sub")
    plain = SheetsOnlyDFME(root=str(sheets))  # without the official split: LOSO over the training sheet
    assert plain.num_folds == 176 and len(plain.table) == 1856 and plain.official_sets() is None


def test_dfme_official_split_names_a_sheet_it_cannot_place(tmp_path: Path) -> None:
    sheets = require_shared(DFME)
    with pytest.raises(MERError, match="none given for testB"):
        SheetsOnlyDFME(root=str(sheets), official_split=True,
                       annotations=[str(sheets / "training_full_with_AU.xlsx"), str(sheets / "testA_full_with_AU.xlsx")])
    renamed = tmp_path / "dfme_test.xlsx"
    renamed.write_bytes((sheets / "testB_full_with_AU.xlsx").read_bytes())
    with pytest.raises(MERError, match="cannot tell which DFME set .*dfme_test.xlsx lists"):
        SheetsOnlyDFME(root=str(sheets), official_split=True, annotations=[
            str(sheets / "training_full_with_AU.xlsx"), str(sheets / "testA_full_with_AU.xlsx"), str(renamed)])


# ---------------------------------------------------------------- the runner saves and keeps the plan

def resolved(config: Path, *overrides: str) -> str:
    return parse_loso(["--config", str(config), *overrides]).fold_config_yaml()


def test_fold_plan_is_saved_before_training_and_a_different_plan_is_refused(tiny_config: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = resolved(tiny_config, "--data.init_args.val_subjects", "1")
    plan_run(config, LosoOptions.of(output=run_dir), run_dir)
    saved = json.loads((run_dir / "fold_plan.json").read_text())
    assert not list((run_dir / "folds").iterdir())  # planned, nothing trained
    assert saved["kind"] == "loso" and [f["test_subjects"] for f in saved["folds"]] == [["s00"], ["s01"], ["s02"], ["s03"]]
    for fold in saved["folds"]:
        assert len(fold["val_subjects"]) == 1 and len(fold["train_subjects"]) == 2
        assert all(key.startswith("synthetic/" + fold["test_subjects"][0]) for key in fold["test_samples"])
    plan_run(config, LosoOptions.of(output=run_dir), run_dir)  # the same plan resumes
    fold = saved["folds"][2]
    fold["train_subjects"], fold["val_subjects"] = fold["val_subjects"], fold["train_subjects"]
    (run_dir / "fold_plan.json").write_text(json.dumps(saved))
    with pytest.raises(MERError, match=r"planned with other folds \(fold_plan.json: fold 2 train_subjects: .*\); ") as error:
        plan_run(config, LosoOptions.of(output=run_dir), run_dir)
    assert "\n" not in str(error.value)


def test_weights_may_be_chosen_on_the_inner_validation_split_only() -> None:
    check_weight_selection([ModelCheckpoint(monitor="val/uf1", mode="max"), EarlyStopping("train/loss")], 1)
    check_weight_selection([ModelCheckpoint()], 0)  # no monitor: saves, chooses nothing
    for callbacks, val_subjects, message in [
        ([ModelCheckpoint(monitor="test/uf1")], 1, "ModelCheckpoint monitors 'test/uf1'"),
        ([ModelCheckpoint(monitor="train/loss")], 1, "ModelCheckpoint monitors 'train/loss'"),
        ([EarlyStopping("val/loss")], 0, "EarlyStopping monitors 'val/loss' but data.val_subjects is 0"),
        ([ModelCheckpoint(monitor="val/uf1"), ModelCheckpoint(monitor="val/loss")], 1, "several ModelCheckpoint"),
    ]:
        with pytest.raises(MERError, match=message):
            check_weight_selection(callbacks, val_subjects)


class OfficialSynthetic(SyntheticDataModule):
    """The synthetic set under a fixed split: s00, s01 train; s02 is 'testA', s03 'testB'."""

    def official_sets(self) -> np.ndarray:
        sets = {"s00": "training", "s01": "training", "s02": "testA", "s03": "testB"}
        return np.array([sets[s] for s in self.row_subjects], dtype=object)


@pytest.mark.slow
def test_official_split_run_reports_each_test_set_and_the_checkpoint_chosen_on_validation(tiny_config: Path,
                                                                                          tmp_path: Path) -> None:
    config = yaml.safe_load(tiny_config.read_text())
    config["data"]["class_path"] = "tests.datamodules.test_fold_plans.OfficialSynthetic"
    config["data"]["init_args"]["val_subjects"] = 1
    config["trainer"] |= {"max_epochs": 2, "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                                          "init_args": {"monitor": "val/uf1", "mode": "max"}}]}
    path = tmp_path / "official.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    metrics = run_loso(resolved(path), LosoOptions.of(output=run_dir, wandb="disabled", threads_per_fold=1))
    predictions = pd.read_csv(run_dir / "predictions.csv", dtype={"subject": str})
    assert set(predictions["fold"]) == {0} and sorted(predictions["subject"].unique()) == ["s02", "s03"]
    assert (predictions.groupby("subject")["test_set"].agg(set) == pd.Series({"s02": {"testA"}, "s03": {"testB"}})).all()
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert set(saved["per_test_set"]) == {"testA", "testB"} and metrics["uf1"] == saved["uf1"]
    for name, part in [("testA", predictions[predictions["test_set"] == "testA"]),
                       ("testB", predictions[predictions["test_set"] == "testB"]), ("both", predictions)]:
        scores = saved["per_test_set"].get(name, saved)  # both test sets together: the overall scores
        uf1, uar = macro_scores(part["label"].to_numpy(), part["pred"].to_numpy(), 3)
        assert scores["n_samples"] == len(part) and scores["uf1"] == pytest.approx(uf1, abs=1e-6)
        assert scores["uar"] == pytest.approx(uar, abs=1e-6)
    # which weights predicted, and why: the best val/uf1 epoch of the fold's own validation log
    record = json.loads((run_dir / "folds" / "fold_000.json").read_text())
    assert record["weights"] == "inner_validation" and record["monitor"] == "val/uf1"
    assert record["epochs_trained"] == 2 and record["training_ended"] == "max_epochs"
    logged = pd.read_csv(run_dir / "folds" / "fold_000" / "logs" / "version_0" / "metrics.csv").dropna(subset=["val/uf1"])
    best = logged.loc[logged["val/uf1"].idxmax()]
    assert record["score"] == pytest.approx(best["val/uf1"], abs=1e-6) and record["checkpoint_epoch"] == int(best["epoch"])
    checkpoint = run_dir / "folds" / "fold_000" / record["checkpoint"]
    assert checkpoint.parent.name == "checkpoints" and torch.load(checkpoint, weights_only=False)["epoch"] == best["epoch"]
    plan = json.loads((run_dir / "fold_plan.json").read_text())
    assert plan["kind"] == "official" and plan["folds"][0]["test_subjects"] == ["s02", "s03"]
    assert plan["folds"][0]["val_subjects"][0] in ("s00", "s01")
