"""The real MEGC2019 composite set: counts, LOSO folds without leakage, bad-input errors."""

import shutil

import numpy as np
import pytest

from datamodules import MEGC2019CompositeDataModule
from datamodules.errors import MERError


@pytest.fixture(scope="module")
def cde(cde_root):
    return MEGC2019CompositeDataModule(root=str(cde_root))


def test_composite_counts_match_the_official_list(cde):
    table = cde.table
    assert len(table) == 442
    assert len(cde.subjects) == 68
    counts = table.groupby("dataset")["label"].value_counts().unstack().loc[:, [0, 1, 2]]
    assert counts.loc["casme2"].tolist() == [88, 32, 25]
    assert counts.loc["samm"].tolist() == [92, 26, 15]
    assert counts.loc["smic"].tolist() == [70, 51, 43]
    assert table.groupby("dataset")["subject"].nunique().to_dict() == {"casme2": 24, "samm": 28, "smic": 16}
    assert cde.images.shape == (442, 28, 28, 3)


def test_every_fold_holds_out_exactly_one_subject(cde):
    subjects = cde.table["subject"].to_numpy()
    tested = []
    for k in range(len(cde.subjects)):
        cde.fold = k
        split = cde.split()
        held_out = set(subjects[split["test"]])
        assert held_out == {cde.subjects[k]}
        assert not held_out & set(subjects[split["train"]])
        assert len(split["train"]) + len(split["test"]) == len(subjects)
        tested.extend(split["test"].tolist())
    assert sorted(tested) == list(range(len(subjects)))


def test_inner_validation_uses_training_subjects_only(cde):
    cde.fold, cde.val_subjects = 5, 3
    split = cde.split()
    subjects = cde.table["subject"].to_numpy()
    val = set(subjects[split["val"]])
    assert len(val) == 3 and cde.subjects[5] not in val
    assert not val & set(subjects[split["train"]])
    cde.fold, cde.val_subjects = 0, 0


def test_fold_by_subject_id_and_out_of_range(cde):
    cde.test_subject = "samm_006"
    assert set(cde.table["subject"].to_numpy()[cde.split()["test"]]) == {"samm_006"}
    cde.test_subject = "nobody"
    with pytest.raises(MERError, match="test_subject 'nobody' is not a subject"):
        cde.split()
    cde.test_subject = None
    cde.fold = 68
    with pytest.raises(MERError, match="out of range.*0..67"):
        cde.split()
    cde.fold = "samm_006"
    with pytest.raises(MERError, match="not a fold index: use 0..67, or test_subject"):
        cde.split()
    cde.fold = 0


def test_items_are_raw_bgr_pixels(cde):
    cde.fold = 0
    cde.setup("fit")
    item = cde.datasets["test"][0]
    row = int(item["index"])
    assert item["apex_flow"].shape == (3, 28, 28)
    assert item["flow"].shape == (1, 3, 28, 28)
    np.testing.assert_array_equal(item["apex_flow"].permute(1, 2, 0).numpy(), cde.images[row].astype(np.float32))
    assert int(item["label"]) == cde.table["label"][row]


@pytest.fixture
def copy_of_cde(cde_root, tmp_path):
    shutil.copy(cde_root / "labels.csv", tmp_path / "labels.csv")
    shutil.copytree(cde_root / "flow", tmp_path / "flow")
    return tmp_path


def test_unknown_classes_and_missing_columns_are_named(copy_of_cde):
    labels = copy_of_cde / "labels.csv"
    text = labels.read_text().splitlines()
    text[1] = text[1].replace(",1,", ",7,", 1)
    labels.write_text("\n".join(text))
    with pytest.raises(MERError, match="unknown class.*label=.7."):
        MEGC2019CompositeDataModule(root=str(copy_of_cde)).table
    labels.write_text("a,b\n1,2\n")
    with pytest.raises(MERError, match=r"missing column\(s\) \['dataset', 'sub', 'filename_o', 'label'\]"):
        MEGC2019CompositeDataModule(root=str(copy_of_cde)).table


def test_missing_root_is_one_clear_error(tmp_path):
    with pytest.raises(MERError, match="label list not found"):
        MEGC2019CompositeDataModule(root=str(tmp_path / "nowhere"))
