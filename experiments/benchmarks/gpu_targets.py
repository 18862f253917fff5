"""The suite's GPU targets, measured in one command on one GPU, printed as one table.

    python -m experiments.benchmarks.gpu_targets                  # on a GPU: about 4-8 minutes
    python -m experiments.benchmarks.gpu_targets --smoke --device cpu   # the same code on CPU-sized work

Workloads and their targets (time budgets we set for a single H100-class GPU):
- ``ststnet_published``: STSTNet on the MEGC2019 composite set with its authors' protocol
  (configs/ststnet/megc2019_cde.yaml as it is: 68 LOSO folds x 800 epochs), fold-batched
  (``--fold-batch auto``): at most 30 s of training.
- ``medn_cde``: MEDN on the composite set (configs/medn/megc2019_cde.yaml: 68 folds x 60 epochs),
  fold-batched: at most 2 min.
- ``tvl1_144``: the batched PyTorch TV-L1 port (datamodules/face/tvl1_torch.py) on 144² pairs of the
  real videos in ../shared/data/video (synthetic noise images when they are absent): at least 1000 pairs/s.

Each row: the measured time (training and prediction; data preparation untimed) or rate, the target,
whether it holds, the floor of the same work on this device (``loso_speed.floor_seconds``,
``flow_speed.floor_seconds``) and the time's ratio to it, and the pooled UF1 of the two LOSO runs.
The table is printed and written (``--output``: gpu_targets.md and gpu_targets.json).
``--smoke`` shrinks every workload (a few folds and epochs, 64² pairs) to check the command itself.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .common import device_name, run_benchmark
from .flow_speed import DEFAULT_VIDEOS, floor_seconds as flow_floor, machine_rates, read_pairs, run_torch
from .loso_speed import floor_seconds as loso_floor, timed_run, workload_config

SMOKE = {"ststnet_published": ("ststnet_cde", 2, "0-3"), "medn_cde": ("medn_cde", 1, "0-1")}
LOSO_TARGETS = {"ststnet_published": ("ststnet_cde", 30.0), "medn_cde": ("medn_cde", 120.0)}
FLOW_TARGET = 1000.0  # pairs/s


@dataclass
class Row:
    workload: str
    work: str
    measured: float
    unit: str
    target: str
    holds: bool
    floor: float
    ratio: float  # measured time / floor time (>= 1; 1 = at the floor)
    uf1: float | None = None


def loso_row(name: str, smoke: bool, device: str, root: Path) -> Row:
    """One LOSO workload, fold-batched, timed, with its floor and pooled UF1."""
    config_name, target = LOSO_TARGETS[name]
    config, folds = workload_config(config_name, published=True, epochs=None, device=device)
    if smoke:
        _, epochs, folds = SMOKE[name]
        config = config.with_trainer(max_epochs=epochs)
    seconds, uf1 = timed_run(config, folds, root / name, "auto")
    n_folds = len(list((root / name / "folds").glob("fold_*.csv")))
    _, _, floor = loso_floor(config, n_folds, device)
    return Row(name, f"{n_folds} folds x {config.max_epochs} epochs, fold-batched", seconds, "s",
               f"<= {target:g} s", seconds <= target, floor, seconds / floor, uf1)


def flow_row(smoke: bool, device: str) -> Row:
    """Pairs/s of the PyTorch TV-L1 port on 144² pairs (64² in smoke mode), largest batch, after a warm-up."""
    size, pairs, batch = (64, 14, 7) if smoke else (144, 4096, 1024)
    if DEFAULT_VIDEOS:
        firsts, seconds = read_pairs(DEFAULT_VIDEOS, pairs, size)
    else:  # no ../shared: noise images of the same size (the work per pair is what is measured)
        rng = np.random.default_rng(0)
        firsts, seconds = (rng.random((pairs, size, size), dtype=np.float32) * 255 for _ in range(2))
    torch_device = torch.device(device)
    run_torch(firsts[:batch], seconds[:batch], batch, torch_device)  # warm-up: allocator, kernels
    (wall, _), _, work = run_torch(firsts, seconds, batch, torch_device)
    rate = pairs / wall
    floor = flow_floor(work, *machine_rates(torch_device, 2 * size * size * batch))
    return Row("tvl1_144" if not smoke else "tvl1_64", f"{pairs} pairs of {size}², batch {batch}", rate, "pairs/s",
               f">= {FLOW_TARGET:g} pairs/s", rate >= FLOW_TARGET, pairs / floor, wall / floor)


def table(rows: list[Row], device: str) -> str:
    lines = [f"device: {device_name(device)}; torch {torch.__version__}",
             "| workload | work | measured | target | holds | floor | measured / floor | pooled UF1 |",
             "| --- | --- | ---: | --- | --- | ---: | ---: | ---: |"]
    for row in rows:
        uf1 = "—" if row.uf1 is None else f"{row.uf1:.4f}"
        lines.append(f"| {row.workload} | {row.work} | {row.measured:.1f} {row.unit} | {row.target} | "
                     f"{'yes' if row.holds else 'no'} | {row.floor:.1f} {row.unit} | {row.ratio:.2f}x | {uf1} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmarks.gpu_targets", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="CPU-sized work: checks the command, measures nothing")
    parser.add_argument("--workloads", default="ststnet_published,medn_cde,tvl1_144")
    parser.add_argument("--output", type=Path, help="write gpu_targets.md and gpu_targets.json here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",")]
    unknown = sorted(set(names) - {*LOSO_TARGETS, "tvl1_144"})
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {sorted({*LOSO_TARGETS, 'tvl1_144'})}")
    if args.device == "cpu" and not args.smoke:
        print("warning: the targets are for a GPU; on the CPU the published protocols take hours (use --smoke)", flush=True)
    root = Path(tempfile.mkdtemp(prefix="gpu_targets_"))
    rows = []
    for name in names:
        row = flow_row(args.smoke, args.device) if name == "tvl1_144" else loso_row(name, args.smoke, args.device, root)
        print(f"{row.workload}: {row.measured:.1f} {row.unit} ({row.target}: {'holds' if row.holds else 'missed'})", flush=True)
        rows.append(row)
    text = table(rows, args.device)
    print(text, end="")
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "gpu_targets.md").write_text(text)
        (args.output / "gpu_targets.json").write_text(json.dumps(
            {"device": device_name(args.device), "torch": torch.__version__, "load_average": os.getloadavg(),
             "smoke": args.smoke, "rows": [asdict(row) for row in rows]}, indent=2) + "\n")


if __name__ == "__main__":
    run_benchmark(main)
