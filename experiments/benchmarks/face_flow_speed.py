"""Speed of the face pipeline on real videos: detection + landmarks + alignment, and TV-L1 flow.

    python -m experiments.benchmarks.face_flow_speed [--workers N] [--frames-per-clip 8] [VIDEO ...]

The videos are cut into pseudo-clips of `--frames-per-clip` consecutive frames. Per clip, as
`mer prepare` does it: landmarks of the onset frame (dlib HOG + 68 points), one similarity
transform, every frame warped to 144², then TV-L1 flow of each frame against the first (T-1 pairs).
Each stage is timed serially (one process, OpenCV's own threads) and with N worker processes
(ProcessPoolExecutor, spawned, one OpenCV thread each); model loading and pool start-up are
excluded. Video decoding is not timed: the frames are decoded once into a memory-mapped file that
every process reads its clips from, as workers preparing a cache read their own clips. The rates
are projected to CAS(ME)^3 Part A (860 clips).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datamodules.face import AlignmentSettings, align_clip, make_landmarker, read_video, require_face
from datamodules.preprocessing import TVL1Settings, flow_sequence, to_gray
from datamodules.errors import MERError

from .common import run_benchmark

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VIDEOS = sorted((ROOT.parent / "shared" / "data" / "video").glob("*.mp4"))
CASME3_PART_A_CLIPS = 860
ALIGNMENT = AlignmentSettings(size=144)
TVL1 = TVL1Settings()
ALIGN_STAGE = "detect+landmarks+align (clips/s)"
FLOW_STAGE = f"TV-L1 {ALIGNMENT.size}² (pairs/s)"

_landmarker = make_landmarker("dlib")
_frames: np.ndarray = np.empty((0, 0, 0, 3), np.uint8)  # every video's frames, memory-mapped


def _start_worker(frames_path: Path, opencv_threads: int | None) -> None:
    """Open the frames and load the landmark models now (not timed); optionally pin OpenCV threads."""
    global _frames
    if opencv_threads is not None:
        cv2.setNumThreads(opencv_threads)
    _frames = np.load(frames_path, mmap_mode="r")
    _frames.max()  # maps every page now rather than during the timed runs
    _landmarker(np.zeros((64, 64, 3), np.uint8))


def _ready(pause: float) -> int:
    time.sleep(pause)  # keeps this worker busy so that the next warm-up task reaches another one
    return os.getpid()


def detect_and_align(span: tuple[int, int]) -> np.ndarray:
    """Frames [start, stop) as one clip: onset landmarks, one similarity transform, all frames
    warped; returns the grey 144² crops (T, 144, 144)."""
    clip = np.asarray(_frames[span[0]:span[1]])
    landmarks = require_face(_landmarker, clip[0], f"frame {span[0]} (onset of a benchmark clip)")
    crops, _ = align_clip(clip, landmarks, ALIGNMENT)
    return to_gray(crops)


def clip_flow(gray: np.ndarray) -> np.ndarray:
    """TV-L1 flow of every frame against the first: (T-1, 2, 144, 144)."""
    return flow_sequence(gray, TVL1)


def clip_spans(lengths: Sequence[int], clip_length: int) -> list[tuple[int, int]]:
    """[start, stop) of consecutive clips within each video of the concatenated frames."""
    spans, offset = [], 0
    for length in lengths:
        spans += [(offset + i, offset + i + clip_length) for i in range(0, length - clip_length + 1, clip_length)]
        offset += length
    return spans


def time_serial(task: Callable[[Any], np.ndarray], items: Sequence[Any]) -> tuple[float, list[np.ndarray]]:
    start = time.perf_counter()
    results = [task(item) for item in items]
    return time.perf_counter() - start, results


def time_parallel(task: Callable[[Any], np.ndarray], items: Sequence[Any], pool: ProcessPoolExecutor) -> float:
    start = time.perf_counter()
    for _ in pool.map(task, items):
        pass
    return time.perf_counter() - start


def duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def measure(videos: dict[str, np.ndarray], frames_per_clip: int, flow_clips: int, workers: int) -> dict[str, tuple[float, float]]:
    """Serial and parallel rates of both stages: {stage: (serial, parallel)}."""
    clips = clip_spans([len(frames) for frames in videos.values()], frames_per_clip)
    flow_indices = np.unique(np.linspace(0, len(clips) - 1, flow_clips).round().astype(int))
    with tempfile.TemporaryDirectory() as tmp:
        frames_path = Path(tmp) / "frames.npy"
        np.save(frames_path, np.concatenate(list(videos.values())))
        _start_worker(frames_path, None)
        align_serial, gray = time_serial(detect_and_align, clips)
        flow_inputs = [gray[i] for i in flow_indices]
        flow_serial, _ = time_serial(clip_flow, flow_inputs)
        # spawn, not fork: a forked child that calls cv2.setNumThreads after the parent has used
        # OpenCV's thread pool (the serial TV-L1 runs above) deadlocks
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, spawn, initializer=_start_worker, initargs=(frames_path, 1)) as pool:
            list(pool.map(_ready, [1.0] * workers))
            align_parallel = time_parallel(detect_and_align, clips, pool)
            flow_parallel = time_parallel(clip_flow, flow_inputs, pool)
    n_pairs = len(flow_inputs) * (frames_per_clip - 1)
    print(f"work: {len(clips)} clips of {frames_per_clip} frames aligned, flow of {len(flow_inputs)} of them ({n_pairs} pairs)")
    return {
        ALIGN_STAGE: (len(clips) / align_serial, len(clips) / align_parallel),
        FLOW_STAGE: (n_pairs / flow_serial, n_pairs / flow_parallel),
    }


def report(rates: dict[str, tuple[float, float]], frames_per_clip: int, workers: int, workstation_cores: int) -> None:
    print(f"\n{'stage':<36}{'serial':>10}{f'{workers} workers':>12}{'parallel/serial':>17}")
    for stage, (serial, parallel) in rates.items():
        print(f"{stage:<36}{serial:>10.2f}{parallel:>12.2f}{parallel / serial:>17.2f}")
    pairs = frames_per_clip - 1
    print(f"\nprojection, CAS(ME)^3 Part A: {CASME3_PART_A_CLIPS} clips x (1 detection, "
          f"{frames_per_clip} warps, {pairs} flow pairs), this machine:")
    print(f"{'workers':<10}{'detect+align':>14}{'flow':>12}{'total':>12}")
    for column, count in enumerate((1, workers)):
        align_time = CASME3_PART_A_CLIPS / rates[ALIGN_STAGE][column]
        flow_time = CASME3_PART_A_CLIPS * pairs / rates[FLOW_STAGE][column]
        print(f"{count:<10}{duration(align_time):>14}{duration(flow_time):>12}{duration(align_time + flow_time):>12}")
    per_process = {stage: parallel / workers for stage, (_, parallel) in rates.items()}
    align_time = CASME3_PART_A_CLIPS / (per_process[ALIGN_STAGE] * workstation_cores)
    flow_time = CASME3_PART_A_CLIPS * pairs / (per_process[FLOW_STAGE] * workstation_cores)
    print(f"{workstation_cores:<10}{duration(align_time):>14}{duration(flow_time):>12}{duration(align_time + flow_time):>12}"
          f"   <- extrapolated: {workstation_cores} workers at this run's per-process rate (not measured)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("videos", nargs="*", type=Path, default=DEFAULT_VIDEOS, help="default: ../shared/data/video/*.mp4")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes of the parallel runs")
    parser.add_argument("--frames-per-clip", type=int, default=8)
    parser.add_argument("--flow-clips", type=int, default=8, help="clips whose flow is timed (TV-L1 is the slow part)")
    parser.add_argument("--workstation-cores", type=int, default=16, help="cores of the extrapolated projection line")
    args = parser.parse_args(argv)
    if not args.videos:
        raise MERError("no videos given and none found in ../shared/data/video; pass video paths")
    videos = {path.name: read_video(path) for path in args.videos}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other jobs skew the figures); "
          f"OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads in the serial runs)")
    print("videos: " + ", ".join(f"{name} ({len(f)} frames, {f.shape[2]}x{f.shape[1]})" for name, f in videos.items()))
    rates = measure(videos, args.frames_per_clip, args.flow_clips, args.workers)
    report(rates, args.frames_per_clip, args.workers, args.workstation_cores)


if __name__ == "__main__":
    run_benchmark(main)
