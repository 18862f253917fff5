"""Fold plans of every LOSO DataModule: LOSO by index or by subject name, subject-independent
k-fold balanced by sample count, identity labels of the training subjects, and check_inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from jsonargparse import ArgumentParser
from torch.utils.data import DataLoader

import datamodules
from datamodules import CASME2DataModule, CompositeReleaseDataModule, MEGC2019CompositeDataModule, SyntheticDataModule
from datamodules.datasets import TensorDictDataset
from datamodules.errors import MERError
from datamodules.loso import LOSODataModule
from tests.conftest import require_shared

# SAMM-like subject ids: the subject at index 6 is '013', not '006'
SUBJECTS = ("006", "007", "009", "010", "011", "012", "013", "014", "015", "016", "017", "018", "019")
COUNTS = (30, 2, 3, 25, 4, 4, 18, 6, 2, 9, 12, 3, 7)


class TableDataModule(LOSODataModule):
    """A LOSO DataModule over a given sample table (no files): what the base class does on its own."""

    def __init__(self, subjects: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.subject_of = subjects

    @property
    def class_names(self) -> tuple[str, ...]:
        return ("a", "b")

    def load_table(self) -> pd.DataFrame:
        n = len(self.subject_of)
        return pd.DataFrame({"sample_id": [f"x{i}" for i in range(n)], "subject": self.subject_of,
                             "dataset": "table", "label": np.arange(n) % 2})

    def make_dataset(self, rows: np.ndarray) -> TensorDictDataset:
        return TensorDictDataset({"label": torch.tensor(self.table["label"].to_numpy())}, rows)


def samm_like(**kwargs) -> TableDataModule:
    # rows interleaved (not grouped by subject), so row positions do not give the subjects away
    subjects = [s for s, n in zip(SUBJECTS, COUNTS) for _ in range(n)]
    order = np.random.default_rng(1).permutation(len(subjects))
    return TableDataModule([subjects[i] for i in order], **kwargs)


@pytest.fixture(scope="module")
def cde_table(cde_root: Path) -> pd.DataFrame:
    return MEGC2019CompositeDataModule(root=str(cde_root)).table


def cde(cde_root: Path, **kwargs) -> MEGC2019CompositeDataModule:
    return MEGC2019CompositeDataModule(root=str(cde_root), **kwargs)


# ---------------------------------------------------------------- k-fold

@pytest.mark.parametrize("k", [2, 5, 13])
def test_k_fold_tests_every_subject_once_and_is_subject_disjoint(k: int) -> None:
    dm = samm_like(k_folds=k)
    subject_of = dm.table["subject"].to_numpy()
    assert dm.num_folds == k
    plan = [dm.fold_test_subjects(f) for f in range(k)]
    assert sorted(s for fold in plan for s in fold) == sorted(SUBJECTS)  # each subject in exactly one fold
    tested = []
    for fold in range(k):
        dm.fold = fold
        split = dm.split()
        assert set(subject_of[split["test"]]) == set(plan[fold]) == set(dm.test_subjects)
        assert not set(subject_of[split["train"]]) & set(plan[fold])
        assert len(split["train"]) + len(split["test"]) == len(subject_of)
        tested += split["test"].tolist()
    assert sorted(tested) == list(range(len(subject_of)))  # every sample tested exactly once


def fold_totals(plan: list[list[str]], counts: pd.Series) -> list[int]:
    return [int(counts[list(fold)].sum()) for fold in plan]


def test_k_fold_is_balanced_by_sample_count(cde_root: Path, cde_table: pd.DataFrame) -> None:
    counts = cde_table["subject"].value_counts()  # samples per subject, counted here with pandas
    subjects = sorted(counts.index, key=datamodules.loso.natural_key)
    for k in (3, 5, 10):
        dm = cde(cde_root, k_folds=k)
        totals = fold_totals([dm.fold_test_subjects(f) for f in range(k)], counts)
        assert sum(totals) == len(cde_table) == 442
        # a naive split (contiguous runs of the sorted subjects) for comparison
        naive = fold_totals([list(part) for part in np.array_split(np.array(subjects), k)], counts)
        assert max(totals) - min(totals) <= counts.max()  # what greedy balancing guarantees
        assert max(totals) - min(totals) <= 0.25 * (max(naive) - min(naive)), (totals, naive)
        assert abs(max(totals) - 442 / k) < 0.05 * 442 / k + 1
    # skewed subject sizes: still within one subject's count of each other
    dm = samm_like(k_folds=4)
    totals = fold_totals([dm.fold_test_subjects(f) for f in range(4)], dm.table["subject"].value_counts())
    assert max(totals) - min(totals) <= max(COUNTS) and max(totals) - min(totals) <= 3, totals


def test_k_fold_is_seeded(cde_root: Path) -> None:
    def plan(seed: int) -> list[list[str]]:
        dm = cde(cde_root, k_folds=5, split_seed=seed)
        return [dm.fold_test_subjects(f) for f in range(5)]

    assert plan(0) == plan(0)
    assert len({str(plan(seed)) for seed in range(4)}) > 1  # the seed changes the grouping
    # LOSO does not depend on the seed: fold k is the k-th subject in natural order
    assert cde(cde_root, split_seed=3).fold_test_subjects(10) == [cde(cde_root).subjects[10]]


def test_k_fold_errors_are_one_line_naming_valid_values() -> None:
    for k, message in [(14, "k_folds=14 is invalid: use 2..13"), (1, "k_folds=1 is invalid: use 2..13"),
                       (0, "k_folds=0 is invalid")]:
        with pytest.raises(MERError, match=message) as error:
            samm_like(k_folds=k).split()
        assert "\n" not in str(error.value) and "null for leave-one-subject-out" in str(error.value)
    with pytest.raises(MERError, match="fold 5 is out of range: this dataset has 5 folds, use 0..4"):
        samm_like(k_folds=5, fold=5).split()


# ---------------------------------------------------------------- LOSO: index vs subject name

def test_loso_fold_is_an_index_and_test_subject_a_name() -> None:
    dm = samm_like()
    assert dm.num_folds == len(SUBJECTS) and dm.subjects == list(SUBJECTS)
    assert [dm.fold_test_subjects(k) for k in range(len(SUBJECTS))] == [[s] for s in SUBJECTS]
    subject_of = dm.table["subject"].to_numpy()
    by_index = samm_like(fold=6)
    assert set(subject_of[by_index.split()["test"]]) == {"013"} and by_index.fold_index == 6
    by_name = samm_like(test_subject="006")
    assert set(subject_of[by_name.split()["test"]]) == {"006"} and by_name.fold_index == 0
    assert samm_like(test_subject="013", fold=6).test_subjects == ["013"]  # both given and agreeing
    with pytest.raises(MERError, match="fold 6 and test_subject '006' disagree: '006' is held out by fold 0"):
        samm_like(test_subject="006", fold=6).split()
    with pytest.raises(MERError, match=r"test_subject '6' is not a subject of this dataset; choose one of 006, 007"):
        samm_like(test_subject="6").split()  # a name, never read as an index
    with pytest.raises(MERError, match="fold '006' is not a fold index: use 0..12, or test_subject to name a subject"):
        samm_like(fold="006").split()  # an index, never read as a name


def test_test_subject_under_k_fold_selects_its_fold() -> None:
    dm = samm_like(k_folds=4, test_subject="013")
    assert "013" in dm.test_subjects and dm.test_subjects == dm.fold_test_subjects(dm.fold_index)


def test_validation_subjects_come_from_the_training_subjects() -> None:
    for k_folds in (None, 4):
        dm = samm_like(k_folds=k_folds, fold=2, val_subjects=3, split_seed=5)
        subject_of = dm.table["subject"].to_numpy()
        split = dm.split()
        train, val, test = (set(subject_of[split[name]]) for name in ("train", "val", "test"))
        assert len(val) == 3 and not val & test and not val & train and not train & test
        assert train | val | test == set(SUBJECTS)
        assert dm.split()["val"].tolist() == split["val"].tolist()  # seeded
    with pytest.raises(MERError, match="val_subjects=12 is invalid: fold 0 has 12 training subjects, use 0..11"):
        samm_like(val_subjects=12).split()


# ---------------------------------------------------------------- identity labels

@pytest.mark.parametrize("k_folds, fold, val_subjects", [(None, 6, 0), (None, 0, 2), (4, 1, 1)])
def test_identity_labels_are_the_training_subjects_only(k_folds: int | None, fold: int, val_subjects: int) -> None:
    dm = samm_like(k_folds=k_folds, fold=fold, val_subjects=val_subjects)
    dm.setup("fit")
    subject_of = dm.table["subject"].to_numpy()
    held_out = set(dm.test_subjects)
    items = {name: [dataset[i] for i in range(len(dataset))] for name, dataset in dm.datasets.items()}
    val_subjects_seen = {subject_of[int(item["index"])] for item in items["val"]}
    train_subjects = sorted(set(SUBJECTS) - held_out - val_subjects_seen)  # SUBJECTS is in natural order
    assert dm.num_identities == len(train_subjects) == len(SUBJECTS) - len(held_out) - val_subjects
    for item in items["train"]:
        assert item["identity"].dtype == torch.long
        assert int(item["identity"]) == train_subjects.index(subject_of[int(item["index"])])
    assert sorted({int(item["identity"]) for item in items["train"]}) == list(range(dm.num_identities))
    assert all(int(item["identity"]) == -1 for name in ("val", "test") for item in items[name])
    assert not held_out & set(dm.identity_subjects)
    batch = next(iter(DataLoader(dm.datasets["test"], batch_size=64)))
    assert batch["identity"].tolist() == [-1] * len(dm.datasets["test"])


def test_identities_follow_the_fold(cde_root: Path, cde_table: pd.DataFrame) -> None:
    dm = cde(cde_root, test_subject="samm_006")
    assert "samm_006" not in dm.identity_subjects and dm.num_identities == 67
    identities = dm.identities(np.arange(len(cde_table)))
    assert (identities[cde_table["subject"].to_numpy() == "samm_006"] == -1).all()
    assert sorted(set(identities.tolist()) - {-1}) == list(range(67))


# ---------------------------------------------------------------- every DataModule takes the options

def test_every_datamodule_takes_the_fold_options() -> None:
    for name in datamodules.__all__:
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(getattr(datamodules, name), "data")
        assert {"data.fold", "data.test_subject", "data.k_folds"} <= {action.dest for action in parser._actions}, name
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(CASME2DataModule, "data")
    parsed = parser.parse_args(["--data.root", "x", "--data.k_folds", "5", "--data.test_subject", "006"])
    assert parsed.data.k_folds == 5 and parsed.data.test_subject == "006"  # a name stays text


def test_subclasses_pass_the_fold_options_through(tmp_path: Path, cde_root: Path) -> None:
    sheet = require_shared("data/annotations/casme2/CASME2-coding-20140508.xlsx")
    options = {"fold": 2, "test_subject": "sub03", "k_folds": 5, "split_seed": 7}
    casme2 = CASME2DataModule(root=str(tmp_path), annotations=str(sheet), **options)
    for dm in (casme2, CompositeReleaseDataModule(sources=[casme2], **options), SyntheticDataModule(**options),
               cde(cde_root, **options)):
        assert (dm.fold, dm.test_subject, dm.k_folds, dm.split_seed) == (2, "sub03", 5, 7), type(dm).__name__


# ---------------------------------------------------------------- check_inputs

def test_base_has_nothing_to_check() -> None:
    assert samm_like().check_inputs() is None


def test_check_inputs_lists_every_bad_flow_image(cde_root: Path, tmp_path: Path) -> None:
    labels = pd.read_csv(cde_root / "labels.csv", dtype=str)
    rows = labels.groupby("dataset").head(3)  # 9 samples of 3 databases
    rows.to_csv(tmp_path / "labels.csv", index=False)
    (tmp_path / "flow").mkdir()
    names = [f"{sub}_{filename} .png" for sub, filename in zip(rows["sub"], rows["filename_o"])]
    for name in names:
        shutil.copy(cde_root / "flow" / name, tmp_path / "flow" / name)
    MEGC2019CompositeDataModule(root=str(tmp_path)).check_inputs()  # good copies pass

    flow = tmp_path / "flow"
    (flow / names[0]).write_bytes(b"")
    (flow / names[2]).unlink()
    image = cv2.imread(str(cde_root / "flow" / names[4]))
    cv2.imwrite(str(flow / names[4]), image[:20])
    cv2.imwrite(str(flow / names[5]), image[..., 0])
    (flow / names[7]).write_text("not a png")
    with pytest.raises(MERError) as error:
        MEGC2019CompositeDataModule(root=str(tmp_path)).check_inputs()
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"5 unusable flow image(s) in {flow}: ")
    for name, reason in [(names[0], "0 bytes"), (names[2], "missing"), (names[4], "20x28, expected 28x28"),
                         (names[5], "28x28 with 1 channel(s), expected 28x28"), (names[7], "not a readable image")]:
        assert f"{name} ({reason})" in message, (name, message)
    assert not any(name in message for name in (names[1], names[3], names[6], names[8]))
    assert message.endswith("replace them or remove their rows from labels.csv")
