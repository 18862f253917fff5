"""Prepared-clip cache (keyed, atomic, resumable) and the synthetic LOSO DataModule."""

from __future__ import annotations

import time

import numpy as np
import pytest

from datamodules import SyntheticDataModule
from datamodules.cache import ClipCache, build_cache, settings_key
from datamodules.preprocessing import TVL1Settings
from datamodules.errors import MERError

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


def prepare_or_fail(item: tuple[int, str]):
    """Leaves a marker per call (visible across processes); item 2 has no face."""
    i, markers = item
    open(f"{markers}/{i}", "w").close()
    time.sleep(0.05)  # clips take time: most are still queued when clip 2 fails
    if i == 2:
        raise MERError(f"x{i}: no face found")
    return {"sample_id": f"x{i}"}, {"data": np.full(2, i, np.float32)}


def test_skip_policy_lists_the_failure_and_fail_policy_stops_early(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    items = [(i, str(markers)) for i in range(200)]
    with pytest.raises(MERError, match="x2: no face found"):
        build_cache(tmp_path / "fail", {"k": 1}, items, prepare_or_fail, workers=2, on_error="fail")
    # queued clips are cancelled (Executor.map's iterator cancels its futures when abandoned): only
    # those started before the failure reached the main process ran (measured 8-19 of 200)
    assert len(list(markers.iterdir())) < 100
    assert sorted(p.name for p in (tmp_path / "fail.partial" / "clips").iterdir()) == ["000000.npz", "000001.npz"]
    cache = build_cache(tmp_path / "skip", {"k": 1}, items[:5], prepare_or_fail, workers=2, on_error="skip")
    assert cache.index["sample_id"].tolist() == ["x0", "x1", "x3", "x4"]
    assert (cache.directory / "skipped.csv").read_text().splitlines()[1] == "2,x2: no face found"
    np.testing.assert_array_equal(cache.array("data")[:, 0], [0, 1, 3, 4])


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
