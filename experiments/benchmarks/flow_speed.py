"""Speed of TV-L1 flow: the batched PyTorch port against OpenCV's DualTVL1, same pairs, one process.

    python -m experiments.benchmarks.flow_speed                       # CPU, one thread each, < 2 min
    python -m experiments.benchmarks.flow_speed --device cuda --pairs 4096 --batch-sizes 256,1024,4096

Pairs: 8-frame pseudo-clips of the real videos in ../shared/data/video (central square resized to
144², as a stand-in for the aligned face crops), each frame against the clip's first one, as
`mer prepare` computes them; repeated when more pairs are asked for than the videos hold. OpenCV
runs pair after pair (on `--opencv-pairs` of them); the PyTorch port runs the same pairs in
batches of each size. Printed: pairs/s, the ratio to OpenCV, the mean end-point error between the
two, and beside each time its floor: the work actually done (pixels × iterations, medians and
warps the PyTorch run counted, the same algorithm OpenCV runs) times its FLOPs over this machine's
measured elementwise FLOP rate, or times the bytes a fused kernel must move over the measured
memory bandwidth, whichever is longer.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from datamodules.errors import MERError
from datamodules.face.tvl1_torch import TVL1Work, selection_network, tvl1_flow

from .common import device_name, run_benchmark

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VIDEOS = sorted((ROOT.parent / "shared" / "data" / "video").glob("*.mp4"))
CLIP_FRAMES = 8

# FLOPs per pixel (our count of tvl1_torch's arithmetic). One primal-dual iteration: ρ (4),
# thresholding (3), v = u + step·∇I1 (4), div p (6), u = v + θ div p (4), squared change (6),
# ∇u (4), |∇u| (8), 1 + τ/θ |∇u| (4), p update (12).
FLOPS_PER_ITERATION = 55
# One warp: two 4-tap cubic weight sets (~80), 3 channels × 16 taps × multiply-add (96), |∇I1|², ρ_c, -1/|∇I1|² (~12).
FLOPS_PER_WARP = 188
# Bytes a fused kernel must move per pixel: iteration = read u (2), p (4), ∇I1 (2), ρ_c, -1/|∇I1|²
# and write u, p (6) float32 values; median = read and write 2 values; warp = read the flow and
# 3 source channels, write ∇I1 (2), ρ_c and -1/|∇I1|².
BYTES_PER_ITERATION = 16 * 4
BYTES_PER_MEDIAN = 4 * 4
BYTES_PER_WARP = 9 * 4


def flops_per_median(size: int = 5) -> int:
    """Per pixel: one min or max per kept step of the selection network, for both flow components."""
    steps, _ = selection_network(size * size)
    return 2 * sum(keep_min + keep_max for _, _, keep_min, keep_max in steps)


def read_pairs(videos: Sequence[Path], count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` (first, second) grey pairs (count, size, size) uint8 from pseudo-clips of the videos."""
    firsts, seconds = [], []
    for video in videos:
        capture = cv2.VideoCapture(str(video))
        clip: list[np.ndarray] = []
        while len(firsts) < count:
            ok, frame = capture.read()
            if not ok:
                break
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            side = min(grey.shape)
            top, left = (grey.shape[0] - side) // 2, (grey.shape[1] - side) // 2
            clip.append(cv2.resize(grey[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA))
            if len(clip) == CLIP_FRAMES:
                firsts += [clip[0]] * (CLIP_FRAMES - 1)
                seconds += clip[1:]
                clip = []
        capture.release()
    if not firsts:
        raise MERError(f"no {CLIP_FRAMES}-frame clip could be read from {', '.join(map(str, videos))}")
    repeat = -(-count // len(firsts))
    return np.stack(firsts * repeat)[:count], np.stack(seconds * repeat)[:count]


def machine_rates(device: torch.device, elements: int) -> tuple[float, float]:
    """(FLOP/s of an elementwise multiply-add, bytes/s of a copy) on tensors of `elements` float32,
    the size of one batch's flow field, best of several runs (per CPU-second on a CPU)."""
    a, b, c = (torch.rand(elements, device=device) for _ in range(3))
    out = torch.empty_like(a)
    flop_rate, bandwidth = 0.0, 0.0
    for _ in range(5):
        seconds = timed(lambda: [torch.addcmul(a, b, c, out=out) for _ in range(20)], device)[1]
        flop_rate = max(flop_rate, 2 * elements * 20 / seconds)
        seconds = timed(lambda: [out.copy_(a) for _ in range(20)], device)[1]
        bandwidth = max(bandwidth, 2 * 4 * elements * 20 / seconds)
    return flop_rate, bandwidth


def timed(work: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process; on a GPU wall seconds again) of `work()`."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    return wall, wall if device.type == "cuda" else time.process_time() - cpu_start


def floor_seconds(work: TVL1Work, flop_rate: float, bandwidth: float) -> float:
    flops = work.iterations * FLOPS_PER_ITERATION + work.medians * flops_per_median() + work.warps * FLOPS_PER_WARP
    moved = work.iterations * BYTES_PER_ITERATION + work.medians * BYTES_PER_MEDIAN + work.warps * BYTES_PER_WARP
    return max(flops / flop_rate, moved / bandwidth)


def run_torch(firsts: np.ndarray, seconds: np.ndarray, batch: int,
              device: torch.device) -> tuple[tuple[float, float], np.ndarray, TVL1Work]:
    """(wall, CPU) seconds for all pairs in batches of `batch`, the flows (N, 2, H, W) and the work done."""
    work = TVL1Work()
    first, second = torch.from_numpy(firsts).to(device), torch.from_numpy(seconds).to(device)
    flows = []

    def all_batches() -> None:
        for start in range(0, len(first), batch):
            flows.append(tvl1_flow(first[start:start + batch].float(), second[start:start + batch].float(), work=work))

    elapsed = timed(all_batches, device)
    return elapsed, torch.cat(flows).cpu().numpy(), work


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("videos", nargs="*", type=Path, default=DEFAULT_VIDEOS, help="default: ../shared/data/video/*.mp4")
    parser.add_argument("--pairs", type=int, default=14, help="pairs the PyTorch port computes per batch size")
    parser.add_argument("--opencv-pairs", type=int, default=14, help="pairs OpenCV computes (its rate is per pair)")
    parser.add_argument("--batch-sizes", default="1,7,14", help="comma-separated batch sizes of the PyTorch runs")
    parser.add_argument("--size", type=int, default=144, help="side of the square grey images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda when present")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of torch and OpenCV (default 1: rates per core; 0: each library's own default)")
    args = parser.parse_args(argv)
    if not args.videos:
        raise MERError("no videos given and none found in ../shared/data/video; pass video paths")
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    device = torch.device(args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    firsts, seconds = read_pairs(args.videos, max(args.pairs, args.opencv_pairs), args.size)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"device: {device_name(str(device))}; torch {torch.__version__} ({torch.get_num_threads()} threads), OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads); load average {load} (other jobs skew the figures)")
    print(f"pairs: {args.size}², {len(firsts)} from {CLIP_FRAMES}-frame clips of " + ", ".join(v.name for v in args.videos))

    run_torch(firsts[:1], seconds[:1], 1, device)  # warm-up: allocator, kernels (not timed)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    n_cv = min(args.opencv_pairs, len(firsts))
    flows: list[np.ndarray] = []
    wall, cpu = timed(lambda: flows.extend(tvl1.calc(a, b, None).transpose(2, 0, 1)
                                           for a, b in zip(firsts[:n_cv], seconds[:n_cv])), torch.device("cpu"))
    reference, opencv_rate = np.stack(flows), n_cv / wall
    _, _, reference_work = run_torch(firsts[:n_cv], seconds[:n_cv], n_cv, device)  # the work of OpenCV's pairs
    flop_rate, bandwidth = machine_rates(device, 2 * args.size * args.size * max(batch_sizes))
    unit = "" if device.type == "cuda" else " per CPU-second"
    print(f"machine: elementwise multiply-add {flop_rate / 1e9:.1f} GFLOP/s, copy {bandwidth / 1e9:.1f} GB/s{unit} "
          f"(on {2 * max(batch_sizes)} planes of {args.size}²)")
    print(f"\n{'run':<22}{'pairs/s':>9}{'vs OpenCV':>11}{'CPU ms/pair':>13}{'vs OpenCV':>11}{'floor ms/pair':>15}"
          f"{'EPE vs OpenCV':>15}")
    print(f"{'OpenCV, one by one':<22}{opencv_rate:>9.2f}{1.0:>11.2f}{1e3 * cpu / n_cv:>13.1f}{1.0:>11.2f}"
          f"{1e3 * floor_seconds(reference_work, flop_rate, bandwidth) / n_cv:>15.2f}{'-':>15}")
    for batch in batch_sizes:
        (wall_t, cpu_t), flows, work = run_torch(firsts[:args.pairs], seconds[:args.pairs], batch, device)
        n = min(n_cv, args.pairs)
        error = np.sqrt(((flows[:n] - reference[:n]) ** 2).sum(axis=1)).mean()
        rate = args.pairs / wall_t
        print(f"{f'torch, batch {batch}':<22}{rate:>9.2f}{rate / opencv_rate:>11.2f}{1e3 * cpu_t / args.pairs:>13.1f}"
              f"{(cpu / n_cv) / (cpu_t / args.pairs):>11.2f}{1e3 * floor_seconds(work, flop_rate, bandwidth) / args.pairs:>15.2f}"
              f"{error:>15.4f}")
    print("\nvs OpenCV: > 1 = the PyTorch port is faster. CPU ms/pair: this process's CPU time (GPU: wall time), "
          "steadier than wall time on a shared machine. floor: see the module docstring.")


if __name__ == "__main__":
    run_benchmark(main)
