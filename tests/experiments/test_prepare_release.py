"""`mer prepare` and the release DataModules on synthetic on-disk replicas of every release layout.

Each replica has a clip folder removed, a needed frame removed and one clip without a face: the
release check must name the first two before any work, preparation must skip the third (or fail
on it, by policy), and everything else must come out as aligned crops with their flow.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from datamodules.databases.per_database import DATAMODULES
from datamodules.preprocessing import TVL1Settings
from experiments.main import mer_main
from datamodules.errors import MERError
from tests.conftest import run_in_process
from tests.helpers.release_replica import Replica, write_replica

DATASETS = ("casme2", "samm", "smic", "casme3", "dfme", "mmew")
PROTOCOL = {"casme3": "4class"}  # others (the replica's 4th clip) stays in
FAST_TVL1 = {"nscales": 3, "warps": 3, "epsilon": 0.02}
MER = str(Path(sys.executable).with_name("mer"))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Replica]:
    directory = tmp_path_factory.mktemp("releases")
    return {name: write_replica(name, directory / name) for name in DATASETS}


def datamodule(replica: Replica, dataset: str, cache_dir: Path, **kwargs):
    return DATAMODULES[dataset](
        root=str(replica.root), annotations=str(replica.sheet), release=replica.release, cache_dir=str(cache_dir),
        protocol=PROTOCOL.get(dataset, inspect.signature(DATAMODULES[dataset]).parameters["protocol"].default),
        num_frames=4, image_size=96,
        tvl1=TVL1Settings(**FAST_TVL1), prepare_workers=1, **kwargs,
    )


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_release_check_names_missing_clips_and_frames(replicas: dict[str, Replica], dataset: str, tmp_path: Path) -> None:
    replica = replicas[dataset]
    report = datamodule(replica, dataset, tmp_path).release_report
    problems = {line.split(":")[0]: line for line in report.problems}
    for sample_id, what in replica.broken.items():
        if what == "no face":
            continue
        assert sample_id in problems, f"{what} of {sample_id} not reported: {report.problems}"
    missing_clip = next(s for s, w in replica.broken.items() if w == "missing clip")
    missing_frame = next(s for s, w in replica.broken.items() if w == "missing frame")
    if dataset != "casme3":  # CAS(ME)³ clips share their task video's folder: its frames are missing instead
        assert "folder not found" in problems[missing_clip] and missing_clip in report.missing_clips[0]
    assert "missing in" in problems[missing_frame]
    assert len(report.sources) == replica.n_rows - 2
    unreadable = {s for s, what in replica.broken.items() if what != "no face"}
    assert not unreadable & {s.sample_id for s in report.sources}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_prepare_each_release(replicas: dict[str, Replica], dataset: str, tmp_path: Path) -> None:
    replica = replicas[dataset]
    dm = datamodule(replica, dataset, tmp_path)
    cache = dm.cache
    no_face = next(s for s, w in replica.broken.items() if w == "no face")
    expected = [s.sample_id for s in dm.release_report.sources if s.sample_id != no_face]
    assert cache.index["sample_id"].tolist() == expected
    n = len(expected)
    assert cache.array("frames").shape == (n, 4, 3, 96, 96) and cache.array("frames").dtype == np.uint8
    assert cache.array("flow").shape == (n, 3, 2, 96, 96) and np.isfinite(cache.array("flow")).all()
    assert cache.array("apex_image").shape == (n, 3, 28, 28)
    assert cache.array("au").shape == (n, dm.num_aus)
    # labels are the adapter's, row by row
    truth = dm.annotations.samples.set_index("sample_id")["label"]
    assert cache.index["label"].tolist() == truth.loc[expected].tolist()
    # the face is in the middle of each crop: the crops differ from a plain resize of the canvas
    crop = cache.array("frames")[0, 0].transpose(1, 2, 0)
    assert crop.std() > 20
    manifest = json.loads((cache.directory / "manifest.json").read_text())
    left_out = " ".join(manifest["not_prepared"])
    assert all(sample_id in left_out for sample_id in replica.broken)
    assert "no face found" in left_out
    assert manifest["settings"]["alignment"]["size"] == 96 and manifest["n_prepared"] == n
    assert (cache.directory / "preview.png").is_file()


@pytest.mark.slow
def test_prepared_clips_feed_loso_folds(replicas: dict[str, Replica], tmp_path: Path) -> None:
    dm = datamodule(replicas["casme2"], "casme2", tmp_path, composite_apex=True)
    dm.prepare_data()
    dm.setup("fit")
    assert set(dm.table.iloc[dm.split()["test"]]["subject"]) == set(dm.test_subjects) == {dm.subjects[0]}
    batch = next(iter(dm.train_dataloader()))
    assert batch["flow"].shape[1:] == (3, 2, 96, 96) and batch["frames"].shape[1:] == (4, 3, 96, 96)
    assert batch["apex_flow"].shape[1:] == (3, 28, 28) and float(batch["apex_flow"].max()) == 255.0
    assert dm.num_classes == 5 and batch["au"].shape[1] == dm.num_aus


def test_check_inputs_lists_every_unusable_clip_before_any_work(tmp_path: Path) -> None:
    replica = write_replica("casme2", tmp_path / "release", breaks=("missing clip", "missing frame"))
    sources = datamodule(replica, "casme2", tmp_path / "cache").release_report.sources
    empty = Path(sources[0].frames[max(sources[0].frames)])
    empty.write_bytes(b"")
    with pytest.raises(MERError) as error:
        datamodule(replica, "casme2", tmp_path / "cache", on_error="fail").check_inputs()
    message = str(error.value)
    assert "\n" not in message and message.startswith("3 casme2 clip(s) cannot be read: ")
    assert all(sample_id in message for sample_id in replica.broken)
    assert f"{sources[0].sample_id}: frame file(s) {empty.name} empty (0 bytes)" in message
    datamodule(replica, "casme2", tmp_path / "cache", on_error="skip").check_inputs()  # the rest is usable
    assert not (tmp_path / "cache").exists(), "checking creates nothing"


@pytest.mark.slow
def test_no_face_fails_by_policy(tmp_path: Path) -> None:
    replica = write_replica("dfme", tmp_path / "release", breaks=("no face",))
    with pytest.raises(MERError, match="no face found") as err:
        datamodule(replica, "dfme", tmp_path / "cache", on_error="fail").cache
    (no_face,) = replica.broken
    assert str(err.value).startswith(f"{no_face}: no face found in frame")
    assert len(list((tmp_path / "cache").glob("*.partial/clips/*.npz"))) == 3, "clips before the failing one are kept"


def write_config(path: Path, replica: Replica, dataset: str, cache_dir: Path, **extra) -> Path:
    init_args = {
        "root": str(replica.root), "annotations": str(replica.sheet), "release": replica.release,
        "num_frames": 4, "image_size": 96, "tvl1": FAST_TVL1, "cache_dir": str(cache_dir), **extra,
    }
    cls = {"casme2": "CASME2DataModule", "dfme": "DFMEDataModule"}[dataset]
    path.write_text(yaml.safe_dump({"data": {"class_path": f"datamodules.{cls}", "init_args": init_args}}))
    return path


def run_mer(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_in_process(mer_main, args, capsys)


@pytest.mark.slow
def test_check_only_and_preview(replicas: dict[str, Replica], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.yaml", replicas["casme2"], "casme2", tmp_path / "cache")
    code, out, _ = run_mer(["prepare", "--config", str(config), "--check-only"], capsys)
    assert code == 0
    assert "usable clips: 4" in out and "missing clips: 1" in out and "frame problems: 1" in out
    assert not (tmp_path / "cache").exists()
    png = tmp_path / "preview.png"
    code, out, _ = run_mer(["prepare", "--config", str(config), "--preview", "3", "--preview-file", str(png)], capsys)
    assert code == 0, out
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 3 * 96 and image.shape[1] >= 4 * 96
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["prepare", "casme2", "--root", "/nonexistent", "--annotations", "x.xlsx"], "release root not found: /nonexistent"),
    (["prepare", "casme2", "--root", "{root}", "--annotations", "nope.xlsx"], "annotation sheet 'nope.xlsx' not found"),
    (["prepare", "casme2", "--root", "{root}", "--annotations", "{sheet}", "--release", "tiff"], "unknown release 'tiff' for casme2"),
    (["prepare", "casme2", "--root", "{root}", "--annotations", "{sheet}", "--frame-pattern", "{subject}/x.jpg"], "must contain {frame}"),
    (["prepare", "casme2", "--root", "{root}", "--annotations", "{sheet}", "--protocol", "9class"], "9class"),
    (["prepare", "casme2", "--root", "{root}", "--annotations", "{sheet}", "--on-error", "fail"], "clip(s) cannot be read"),
    (["prepare", "--root", "{root}"], "name a dataset"),
])
def test_prepare_errors_are_one_line(replicas: dict[str, Replica], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     args: list[str], message: str) -> None:
    replica = replicas["casme2"]
    args = [a.format(root=replica.root, sheet=replica.sheet) if "{root}" in a or "{sheet}" in a else a for a in args]
    code, _, err = run_mer(args + ["--cache-dir", str(tmp_path)], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err


def finished_caches(root: Path) -> list[Path]:
    """Cache directories under `root`, without partial builds and lock files."""
    return [p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".partial")]


@pytest.mark.slow
def test_kill_then_rerun_gives_the_identical_cache(tmp_path: Path) -> None:
    replica = write_replica("casme2", tmp_path / "release", n_subjects=3, clips_per_subject=4, breaks=())
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    command = [MER, "prepare", "--workers", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command + ["--config", str(write_config(tmp_path / "k.yaml", replica, "casme2", killed))],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(killed.glob("*.partial/clips/*.npz"))) < 3:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(list(killed.glob("*.partial/clips/*.npz")))
    assert 3 <= done_before < replica.n_rows, "the kill should land mid-way"
    assert not finished_caches(killed), "no finished cache after a kill"
    for cache_dir in (killed, clean):
        config = write_config(tmp_path / f"{cache_dir.name}.yaml", replica, "casme2", cache_dir)
        result = subprocess.run(command + ["--config", str(config)], env=env, capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stderr[-2000:]
    (a,), (b,) = [finished_caches(d) for d in (killed, clean)]  # the kill left no stale lock: the rerun finished
    assert a.name == b.name
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for name in ("frames", "flow", "apex_image", "au"):
        assert np.array_equal(np.load(a / f"{name}.npy"), np.load(b / f"{name}.npy")), name
    assert pd.read_csv(a / "index.csv").equals(pd.read_csv(b / "index.csv"))
    manifest = [json.loads((d / "manifest.json").read_text()) for d in (a, b)]
    assert manifest[0] == manifest[1]


@pytest.mark.slow
def test_composite_of_releases(replicas: dict[str, Replica], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CASME II + SMIC under 'cde' as one LOSO set: prefixed subjects, global indices, per-database column."""
    sources = []
    for dataset in ("casme2", "smic"):
        replica = replicas[dataset]
        sources.append({"class_path": f"datamodules.{ {'casme2': 'CASME2DataModule', 'smic': 'SMICDataModule'}[dataset]}",
                        "init_args": {"root": str(replica.root), "annotations": str(replica.sheet), "release": replica.release,
                                      "protocol": "cde", "num_frames": 4, "image_size": 96, "tvl1": FAST_TVL1,
                                      "cache_dir": str(tmp_path / "cache")}})
    config = tmp_path / "composite.yaml"
    config.write_text(yaml.safe_dump({"data": {"class_path": "datamodules.CompositeReleaseDataModule",
                                               "init_args": {"sources": sources, "batch_size": 64}}}))
    code, out, err = run_mer(["prepare", "--config", str(config), "--workers", "1"], capsys)
    assert code == 0, err
    assert out.count("prepared ") == 2
    from experiments.prepare import datamodule_from, parse_args

    composite = datamodule_from(parse_args(["--config", str(config)]))
    table = composite.table
    assert set(table["dataset"]) == {"casme2", "smic"} and composite.class_names == ("negative", "positive", "surprise")
    assert all(s.startswith(("casme2_sub", "smic_s")) for s in composite.subjects)
    composite.setup("fit")
    batch = next(iter(composite.train_dataloader()))
    rows = batch["index"].numpy()
    assert (table.loc[rows, "label"].to_numpy() == batch["label"].numpy()).all()
    assert batch["au"].shape[1] == 0 and not batch["au_mask"].any()


@pytest.mark.slow
def test_mer_loso_on_a_prepared_release(replicas: dict[str, Replica], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """End to end: STSTNet on the composite-protocol apex images of a release, every fold, pooled metrics."""
    replica = replicas["smic"]
    config = tmp_path / "ststnet.yaml"
    config.write_text(yaml.safe_dump({
        "trainer": {"max_epochs": 2, "accelerator": "cpu"},
        "model": {"class_path": "lightning_modules.STSTNet", "init_args": {"in_channels": 3, "image_size": 28}},
        "data": {"class_path": "datamodules.SMICDataModule", "init_args": {
            "root": str(replica.root), "annotations": str(replica.sheet), "release": replica.release, "num_frames": 4,
            "image_size": 96, "tvl1": FAST_TVL1, "cache_dir": str(tmp_path / "cache"), "composite_apex": True,
            "with_frames": False, "prepare_workers": 1}},
    }))
    code, out, err = run_mer(["loso", "--config", str(config), "--output", str(tmp_path / "run"), "--wandb", "disabled"], capsys)
    assert code == 0, err[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    prepared = pd.read_csv(next((tmp_path / "cache").glob("smic-*/index.csv")))
    assert metrics["n_samples"] == len(prepared) and metrics["n_folds"] == prepared["subject"].nunique()
    assert metrics["class_names"] == ["negative", "positive", "surprise"]


@pytest.mark.slow
def test_a_real_smile_through_mer_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """single_face.mp4 (a real man: neutral -> smile from about frame 16 -> fading at the end)
    written out as a CASME II cropped release with one clip, prepared by `mer prepare`: the face is
    found in every sampled frame and the mouth's flow rises at the smile and falls after it.

    Per-frame alignment: the man leans towards the camera during the clip, which with one onset
    transform puts up to 5 px of whole-face flow on top of the smile (reference mode is the right
    default for the databases' head-fixed recordings, not for this handheld video)."""
    from datamodules.face import read_video
    from tests.conftest import require_shared

    frames = read_video(require_shared("data/video/single_face.mp4"))
    root = tmp_path / "Cropped"
    (root / "sub01" / "EP01_01").mkdir(parents=True)
    for n, frame in enumerate(frames, start=1):
        cv2.imwrite(str(root / "sub01" / "EP01_01" / f"reg_img{n}.jpg"), frame[..., ::-1])
    sheet = tmp_path / "CASME2-coding-20140508.xlsx"
    pd.DataFrame([{"Subject": 1, "Filename": "EP01_01", "OnsetFrame": 5, "ApexFrame": 25, "OffsetFrame": 72,
                   "Action Units": "6+12", "Estimated Emotion": "happiness"}]).to_excel(sheet, index=False)
    config = write_config(tmp_path / "real.yaml", Replica(root, sheet, "cropped", 1), "casme2", tmp_path / "cache")
    code, _, err = run_mer(["prepare", "--config", str(config), "--workers", "1", "--num-frames", "8", "--size", "144",
                            "--per-frame-alignment"], capsys)
    assert code == 0, err
    (cache_dir,) = finished_caches(tmp_path / "cache")
    flow = np.load(cache_dir / "flow.npy")[0].astype(np.float32)
    mouth = np.sqrt((flow ** 2).sum(axis=1))[:, 80:130, 30:114].mean(axis=(1, 2))
    assert pd.read_csv(cache_dir / "index.csv").loc[0, "apex_pos"] == 2  # sampled frames 5, 14.6, 24.1, ...
    # measured mean mouth flow (px) to sampled frames 1..7: 0.26, 3.01, 2.59, 2.56, 2.40, 2.14, 1.79
    assert int(np.argmax(mouth)) == 1, mouth  # peak at the apex
    assert mouth[0] < 0.25 * mouth[1], mouth  # before the smile
    assert (np.diff(mouth[1:]) < 0.1).all() and mouth[-1] < 0.75 * mouth[1], mouth  # fading after it
    assert np.load(cache_dir / "landmarks.npy").shape == (1, 8, 68, 2)
    assert cv2.imread(str(cache_dir / "preview.png")) is not None


def test_frame_listing_tolerates_padding_and_image_format(tmp_path: Path) -> None:
    """Copies differ in zero-padding and image format: the listing parses the digits and accepts any
    image extension, preferring the pattern's own when both exist; other files are ignored."""
    from datamodules.databases.layouts import FrameLayout

    folder = tmp_path / "006" / "006_1_2"
    folder.mkdir(parents=True)
    for name in ("006_05562.jpg", "006_5563.jpg", "006_05564.png", "006_05564.jpg", "006_05565.PNG", "notes.txt", "006_x.jpg"):
        (folder / name).touch()
    layout = FrameLayout(tmp_path, "{subject}/{clip}/{subject}_{frame:05d}.jpg")
    found = layout.list_frames({"subject": "006", "clip": "006_1_2"})
    assert {n: p.name for n, p in found.items()} == {5562: "006_05562.jpg", 5563: "006_5563.jpg", 5564: "006_05564.jpg",
                                                     5565: "006_05565.PNG"}
    assert layout.list_frames({"subject": "007", "clip": "007_1_2"}) == {}
    with pytest.raises(MERError, match="must contain {frame} in its file name"):
        FrameLayout(tmp_path, "{subject}/{frame}/img.jpg")
    with pytest.raises(MERError, match="uses 'emotion', which is not a column"):
        FrameLayout(tmp_path, "{emotion}/{clip}/{frame}.jpg").clip_dir({"clip": "a", "sample_id": "x"})


@pytest.mark.slow
def test_corrupt_and_blank_frames_are_skipped_and_listed(tmp_path: Path) -> None:
    replica = write_replica("mmew", tmp_path / "release", breaks=())
    dm = datamodule(replica, "mmew", tmp_path / "cache")
    sources = dm.release_report.sources
    corrupt = Path(sources[0].frames[max(sources[0].frames)])
    corrupt.write_bytes(b"\xff\xd8 not a jpeg")
    blank = Path(sources[1].frames[min(sources[1].frames)])
    cv2.imwrite(str(blank), np.zeros((240, 320, 3), np.uint8))
    cache = dm.cache
    assert cache.index["sample_id"].tolist() == [s.sample_id for s in sources[2:]]
    left_out = json.loads((cache.directory / "manifest.json").read_text())["not_prepared"]
    assert any(line.startswith(f"{sources[0].sample_id}: cannot read frame {corrupt}") for line in left_out), left_out
    assert any(line.startswith(f"{sources[1].sample_id}: frame {blank} is blank") for line in left_out), left_out
