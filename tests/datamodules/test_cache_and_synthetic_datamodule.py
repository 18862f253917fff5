"""Prepared-clip cache (keyed, atomic, resumable) and the synthetic LOSO DataModule."""

from __future__ import annotations

import multiprocessing
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock, Timeout

from datamodules import SyntheticDataModule
from datamodules.cache import ClipCache, build_cache, settings_key
from datamodules.preprocessing import TVL1Settings
from datamodules.errors import MERError

from tests.conftest import TINY_SYNTHETIC

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


@pytest.mark.slow
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


# ---------------------------------------------------------------- many processes, one cache

NANO_SYNTHETIC = {"n_subjects": 2, "clips_per_subject": 2, "image_size": 48, "num_frames": 4, "prepare_workers": 1}


def prepare_nano_synthetic(cache_dir: str, barrier) -> None:
    """One SLURM array task's start: wait for the other, then prepare the same cache."""
    barrier.wait()
    SyntheticDataModule(**NANO_SYNTHETIC, cache_dir=cache_dir).prepare_data()


def cache_files(directory) -> dict[str, object]:
    """Every file of a cache: arrays as arrays, the rest as text."""
    return {p.name: np.load(p) if p.suffix == ".npy" else p.read_text() for p in sorted(directory.iterdir())}


@pytest.mark.slow
def test_two_processes_building_one_cache_end_with_one_valid_cache(tmp_path, capfd):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    processes = [context.Process(target=prepare_nano_synthetic, args=(str(tmp_path / "shared"), barrier)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [process.exitcode for process in processes] == [0, 0]
    err = capfd.readouterr().err
    assert err.count("waiting for another process preparing") == 1, err  # the second waited, then reused
    assert err.count("0/6 [") == 1, err  # one progress bar: the clips were prepared once
    (built,) = [p for p in (tmp_path / "shared").iterdir() if p.is_dir()]
    assert not list((tmp_path / "shared").glob("*.partial"))
    single = SyntheticDataModule(**NANO_SYNTHETIC, cache_dir=str(tmp_path / "single"))
    single.prepare_data()
    assert single.cache.directory.name == built.name and ClipCache(built).problems() == []
    shared, alone = cache_files(built), cache_files(single.cache.directory)
    assert shared.keys() == alone.keys() >= {"meta.json", "index.csv", "frames.npy", "flow.npy"}
    for name in shared:
        assert np.array_equal(shared[name], alone[name]) if name.endswith(".npy") else shared[name] == alone[name], name


def prepare_slowly(i: int, delay: float = 0.5):
    time.sleep(delay)
    return {"sample_id": f"x{i}"}, {"data": np.full(3, i, np.float32)}


def build_slowly(directory: str) -> None:
    build_cache(Path(directory), {"k": 1}, list(range(40)), prepare_slowly, workers=1)


@pytest.mark.slow
def test_a_killed_builder_leaves_no_stale_lock(tmp_path):
    directory = tmp_path / "slow-abc"
    process = multiprocessing.get_context("spawn").Process(target=build_slowly, args=(str(directory),))
    process.start()
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("slow-abc.partial/clips/*.npz")):
        time.sleep(0.1)
    lock = FileLock(tmp_path / "slow-abc.lock")
    with pytest.raises(Timeout):
        lock.acquire(timeout=0.5)  # held by the builder
    process.kill()
    process.join()
    lock.acquire(timeout=5)  # freed by the OS with the killed process
    lock.release()
    done = len(list(tmp_path.glob("slow-abc.partial/clips/*.npz")))
    assert 1 <= done < 40
    cache = build_cache(directory, {"k": 1}, list(range(40)), partial(prepare_slowly, delay=0), workers=1)
    assert cache.index["sample_id"].tolist() == [f"x{i}" for i in range(40)]  # resumed, complete


def test_a_damaged_cache_is_named_by_check_inputs(tmp_path):
    cache = build_cache(tmp_path / "squares-abc", {"k": 1}, list(range(4)), prepare_square, workers=1)
    assert cache.problems() == []
    data = cache.directory / "data.npy"
    data.write_bytes(data.read_bytes()[:-8])
    with pytest.raises(MERError, match=r"prepared cache .*squares-abc is damaged: data.npy unreadable .*; delete that folder"):
        ClipCache(cache.directory).check()
    data.unlink()
    assert ClipCache(cache.directory).problems() == ["data.npy missing"]
    synthetic = SyntheticDataModule(**NANO_SYNTHETIC, cache_dir=str(tmp_path / "synthetic"))
    synthetic.check_inputs()  # nothing prepared yet: nothing to check
    synthetic.prepare_data()
    synthetic.check_inputs()
    flow = synthetic.cache.directory / "flow.npy"
    np.save(flow, np.load(flow)[:2])
    with pytest.raises(MERError, match=r"flow.npy is float16\[2, 3, 2, 48, 48\], meta.json says float16\[6, 3, 2, 48, 48\]"):
        SyntheticDataModule(**NANO_SYNTHETIC, cache_dir=str(tmp_path / "synthetic")).check_inputs()
