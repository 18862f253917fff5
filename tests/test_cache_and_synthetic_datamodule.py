"""Prepared-clip cache (keyed, atomic, resumable) and the synthetic LOSO DataModule."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules import SyntheticDataModule
from datamodules.cache import ClipCache, build_cache, settings_key
from datamodules.preprocessing import TVL1Settings

from .conftest import TINY_SYNTHETIC

CALLS: list[int] = []


def prepare_square(i: int):
    CALLS.append(i)
    if i == 3 and FAIL_AT_3:
        raise RuntimeError("killed")
    return {"sample_id": f"x{i}", "value": i * i}, {"data": np.full((2, 3), i, np.float32)}


FAIL_AT_3 = False


def test_cache_resumes_after_an_interrupted_build(tmp_path):
    global FAIL_AT_3
    directory = tmp_path / "squares-abc"
    FAIL_AT_3 = True
    with pytest.raises(RuntimeError):
        build_cache(directory, {"k": 1}, list(range(6)), prepare_square, workers=1)
    assert not directory.exists()  # nothing half-written in place
    assert len(list((tmp_path / "squares-abc.partial" / "clips").glob("*.npz"))) == 3
    FAIL_AT_3 = False
    CALLS.clear()
    cache = build_cache(directory, {"k": 1}, list(range(6)), prepare_square, workers=1)
    assert CALLS == [3, 4, 5]  # only the clips not prepared before
    assert cache.index["value"].tolist() == [0, 1, 4, 9, 16, 25]
    np.testing.assert_array_equal(cache.array("data")[:, 0, 0], np.arange(6))
    assert not (tmp_path / "squares-abc.partial").exists()
    CALLS.clear()
    build_cache(directory, {"k": 1}, list(range(6)), prepare_square, workers=1)
    assert CALLS == []  # complete cache reused


def test_cache_key_follows_every_setting(cache_dir):
    a = SyntheticDataModule(**TINY_SYNTHETIC, cache_dir=str(cache_dir))
    b = SyntheticDataModule(**{**TINY_SYNTHETIC, "difficulty": 0.9}, cache_dir=str(cache_dir))
    c = SyntheticDataModule(**TINY_SYNTHETIC, cache_dir=str(cache_dir), tvl1=TVL1Settings(nscales=3))
    keys = {settings_key(dm.cache_settings()) for dm in (a, b, c)}
    assert len(keys) == 3
    assert settings_key(a.cache_settings()) == settings_key(SyntheticDataModule(**TINY_SYNTHETIC).cache_settings())


@pytest.fixture(scope="module")
def synthetic(cache_dir):
    dm = SyntheticDataModule(**TINY_SYNTHETIC, cache_dir=str(cache_dir))
    dm.prepare_data()
    return dm


def test_prepared_cache_contents(synthetic):
    cache = synthetic.cache
    assert ClipCache.is_complete(cache.directory)
    n = len(cache.index)
    assert cache.array("flow").shape == (n, 7, 2, 72, 72) and cache.array("flow").dtype == np.float16
    assert cache.array("frames").shape == (n, 8, 3, 72, 72) and cache.array("frames").dtype == np.uint8
    assert cache.array("landmarks").shape == (n, 8, 68, 2)
    assert cache.array("au").shape == (n, synthetic.num_aus)
    assert set(cache.index.columns) >= {"sample_id", "subject", "dataset", "label_3class", "label_7class", "aus",
                                        "onset", "apex", "offset", "apex_pos", "hard"}
    assert (cache.index["apex_pos"].between(1, 7)).all()
    # the multi-hot AU array agrees with the readable AU column
    for row, aus in enumerate(cache.index["aus"]):
        assert int(cache.array("au")[row].sum()) == len(str(aus).split("+"))


def test_no_test_subject_sample_reaches_training_in_any_fold(synthetic):
    subjects = synthetic.table["subject"].to_numpy()
    for fold in range(len(synthetic.subjects)):
        synthetic.fold = fold
        synthetic.setup("fit")
        train_rows = synthetic.datasets["train"].rows
        test_rows = synthetic.datasets["test"].rows
        held_out = synthetic.subjects[fold]
        assert set(subjects[test_rows]) == {held_out}
        assert held_out not in set(subjects[train_rows])
        seen = {int(synthetic.datasets["train"][i]["index"]) for i in range(len(train_rows))}
        assert not seen & set(test_rows.tolist())
    synthetic.fold = 0


def test_items_and_protocols(synthetic):
    synthetic.setup("fit")
    item = synthetic.datasets["train"][0]
    assert item["flow"].shape == (7, 2, 72, 72) and item["frames"].shape == (8, 3, 72, 72)
    assert 0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1
    row = int(item["index"])
    assert (item["apex_flow"] == item["flow"][synthetic.table["apex_pos"][row] - 1]).all()
    seven = SyntheticDataModule(**TINY_SYNTHETIC, cache_dir=str(synthetic.cache_dir), protocol="7class")
    assert seven.num_classes == 7 and seven.cache.directory == synthetic.cache.directory
    assert seven.table["label"].max() < 7
