"""Time and peak memory of one full-size Xie et al. 2022 training iteration.

    python -m experiments.benchmarks.xie2022_step [--batch 32] [--frames 8] [--device cpu|cuda|all]
                                                  [--steps stage2,stage3,menet_only] [--repeats 1]

Full size = the paper's settings: MENet on 256×256 frames, IDNet on 128×128 (downsampled inside
the model from the 256×256 clip), batch 32, ResNet base width 64, all Table 5 modules on. The
paper does not give T; we use 8 frames (our choice, the configs' value). Each measurement runs in
a fresh process, so the peak resident memory (getrusage ru_maxrss; torch allocations are invisible
to tracemalloc) belongs to that measurement alone; on CUDA the peak is torch's max allocated memory.

Steps: ``stage2`` = a stage-2/4 iteration (MENet + DAO forward/backward with L_ce, L_div and L_MI,
IDNet forward without gradient, MINE forward/backward, Adam steps); ``stage3`` = a stage-3 iteration
(IDNet forward/backward, MENet forward without gradient, MINE); ``menet_only`` = Table 5 row 1
(plain MENet, cross-entropy only), the baseline the ratios are printed against. On CUDA one untimed
warm-up iteration precedes the timed ones; on CPU a full-size iteration takes minutes, so the first
one is timed (its one-off costs, e.g. allocating Adam's state, are small against that).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from typing import Any

import torch

from lightning_modules.xie2022 import Xie2022

from .common import device_name, run_benchmark

SIZE, IDNET_SIZE, NUM_CLASSES, NUM_IDENTITIES = 256, 128, 5, 20
STEPS = {"stage2": 2, "stage3": 3, "menet_only": 2}


def _measure(step: str, batch_size: int, frames: int, device: str, repeats: int) -> dict[str, Any]:
    """Build the model and a random batch on `device`, run warm-up + `repeats` iterations of `step`."""
    torch.manual_seed(0)
    row1 = {"use_dao": False, "use_div": False, "use_idnet_mine": False} if step == "menet_only" else {}
    module = Xie2022(num_classes=NUM_CLASSES, num_identities=NUM_IDENTITIES, num_frames=frames, menet_size=SIZE,
                     idnet_size=IDNET_SIZE, **row1).to(device)
    batch = {
        "frames": torch.rand(batch_size, frames, 3, SIZE, SIZE, device=device),
        "label": torch.randint(0, NUM_CLASSES, (batch_size,), device=device),
        "identity": torch.randint(0, NUM_IDENTITIES, (batch_size,), device=device),
    }
    stage = STEPS[step]
    optimizers = module.stage_optimizers(stage, module.configure_optimizers())
    rss_before = _max_rss_mib()

    def iteration() -> None:
        module.set_modes("menet" if stage == 2 else "idnet")
        _, objective = module.stage_losses(stage, batch)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        objective.backward()
        for optimizer in optimizers:
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        iteration()  # warm-up: allocator, kernels, Adam state
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        iteration()
    seconds = (time.perf_counter() - start) / repeats
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _max_rss_mib()
    return {"step": step, "device": device, "seconds": seconds, "peak_mib": peak, "rss_before_mib": rss_before}


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _in_fresh_process(*args: Any) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmarks.xie2022_step", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8, help="T frames per clip (our choice: 8)")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all", help="all = cpu, and cuda if available")
    parser.add_argument("--steps", default="menet_only,stage2,stage3")
    parser.add_argument("--repeats", type=int, default=1, help="timed iterations after the warm-up")
    args = parser.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    steps = [s.strip() for s in args.steps.split(",")]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {sorted(STEPS)}")
    print(f"Xie et al. 2022 iteration: batch {args.batch}, T {args.frames}, MENet {SIZE}², IDNet {IDNET_SIZE}², "
          f"torch {torch.__version__}")
    for device in devices:
        print(f"device: {device} ({device_name(device)})")
        results = {step: _in_fresh_process(step, args.batch, args.frames, device, args.repeats) for step in steps}
        baseline = results.get("menet_only")
        for step, r in results.items():
            ratio = f"  {r['seconds'] / baseline['seconds']:.2f}x menet_only" if baseline else ""
            memory = (f"peak allocated {r['peak_mib']:.0f} MiB" if device == "cuda"
                      else f"peak RSS {r['peak_mib']:.0f} MiB (after build {r['rss_before_mib']:.0f} MiB)")
            print(f"  {step:<11} {r['seconds']:8.2f} s/batch  {memory}{ratio}", flush=True)


if __name__ == "__main__":
    run_benchmark(main)
