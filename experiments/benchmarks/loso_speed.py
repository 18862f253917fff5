"""Sequential vs fold-batched LOSO on the same work, in one process, with the work's floor.

    python -m experiments.benchmarks.loso_speed [--workloads ststnet_cde,medn_synthetic]
        [--epochs N] [--folds SPEC] [--fold-batch auto|N] [--published] [--output DIR]

Each workload is run twice into fresh run directories under ``--output`` (default a temporary
folder): the old path (``--fold-batch off``: one Trainer per fold, one fold after another) and the
new one (``--fold-batch``), then pooled (over the selected folds); printed are both wall times (training + prediction; the
data is prepared before timing), their ratio, both pooled UF1 and the device. The floor is the
work's FLOPs (forward + backward per training sample, counted by torch's FlopCounterMode, times
the samples each fold trains on per epoch, epochs and folds) over the rate this machine reaches
for the same model (FLOPs of training steps at 4x, and on a GPU up to 64x, the configured batch over
their measured time); on a GPU at least the saved activations' bytes over the copy bandwidth.

Workloads: ``ststnet_cde`` = configs/ststnet/megc2019_cde.yaml (STSTNet on the MEGC2019 composite
set, ../shared/data/megc2019_cde); ``medn_synthetic`` = configs/medn/synthetic.yaml (MEDN on the
built-in synthetic set); ``medn_cde`` = configs/medn/megc2019_cde.yaml (MEDN on the composite set).
The defaults are sized for a 2-core CPU (a few minutes): STSTNet on folds 0-15 for 10 epochs, MEDN on
the 4-subject 72-px synthetic set of the tests for 2 epochs, MEDN on composite folds 0-3 for 2 epochs.
``--published`` runs the configs as they are (STSTNet: 68 folds x 800 epochs; MEDN: the README main
job, or 68 folds x 60 epochs on the composite set), for a GPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from ..config_files import read_config
from ..metrics import pooled_metrics
from ..runner.executors.local import run_local
from ..runner.options import FoldBatching, LocalExecutor, LosoOptions
from ..runner.paths import FoldPaths
from ..runner.planning import plan_run
from ..runner.run_plan import RunConfig, instantiate
from .common import device_name, run_benchmark

CONFIGS = {"ststnet_cde": Path("configs/ststnet/megc2019_cde.yaml"), "medn_synthetic": Path("configs/medn/synthetic.yaml"),
           "medn_cde": Path("configs/medn/megc2019_cde.yaml")}
CPU_SIZED = {  # (epochs, folds, data/model overrides) of the default, CPU-sized run
    "ststnet_cde": (10, "0-15", {"data": {"root": "../shared/data/megc2019_cde"}}),
    "medn_cde": (2, "0-3", {}),
    "medn_synthetic": (2, None, {"data": {"n_subjects": 4, "clips_per_subject": 5, "image_size": 72},
                                 "model": {"image_size": 72, "patch_size": 18, "embed_dim": 16, "num_heads": 2}}),
}


def workload_config(name: str, published: bool, epochs: int | None, device: str) -> tuple[RunConfig, str | None]:
    """The workload's config (CPU-sized unless `published`) and its fold selection."""
    values = read_config(CONFIGS[name])
    default_epochs, folds, overrides = CPU_SIZED[name]
    if not published:
        for section, section_values in overrides.items():
            values[section]["init_args"].update(section_values)
    config = RunConfig(values)
    if not published:
        config = config.with_trainer(max_epochs=default_epochs)
    else:
        folds = None
    if epochs is not None:
        config = config.with_trainer(max_epochs=epochs)
    return config.with_trainer(accelerator=device, devices=1), folds


def gpu_copy_bandwidth(elements: int = 2**26) -> float:
    """Bytes/s of a device-to-device copy of `elements` float32 (read + write), best of five."""
    a = torch.rand(elements, device="cuda")
    b = torch.empty_like(a)
    best = 0.0
    for _ in range(5):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            b.copy_(a)
        torch.cuda.synchronize()
        best = max(best, 2 * 4 * elements * 10 / (time.perf_counter() - start))
    return best


def floor_seconds(config: RunConfig, n_folds: int, device: str) -> tuple[float, float, float]:
    """(total training FLOPs, measured FLOP/s, floor seconds) of the workload's training on `device`.

    The rate is the best of training steps at 4x, 16x and 64x the configured batch (one model; a GPU
    reaches its rate only on large batches). On a GPU the floor is also at least the bytes a step must
    move (every activation autograd saves, written once and read once) over the measured copy bandwidth."""
    from torch.utils.flop_counter import FlopCounterMode

    cli = instantiate(config.with_trainer(logger=False, enable_progress_bar=False, enable_model_summary=False))
    model, datamodule = cli.model.to(device), cli.datamodule
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batch = {k: v.to(device) for k, v in next(iter(loader)).items()}

    def step(b: dict[str, torch.Tensor]) -> None:
        model.total_loss(model.loss_terms(b, model(b))).backward()
        if device == "cuda":
            torch.cuda.synchronize()

    saved = 0

    def count(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        step(batch)
    per_sample, bytes_per_sample = counter.get_total_flops() / len(batch["label"]), 2 * saved / len(batch["label"])
    rate = 0.0
    for scale in (4, 16, 64) if device == "cuda" else (4,):
        big = {k: torch.cat([v] * scale) for k, v in batch.items()}
        step(big)  # warm-up
        start = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            step(big)
        rate = max(rate, per_sample * len(big["label"]) * repeats / (time.perf_counter() - start))
    samples = len(datamodule.split()["train"]) * int(config.max_epochs or 0) * n_folds
    total = per_sample * samples
    floor = total / rate
    if device == "cuda":
        floor = max(floor, bytes_per_sample * samples / gpu_copy_bandwidth())
    return total, rate, floor


def timed_run(config: RunConfig, folds: str | None, run_dir: Path, fold_batch: str) -> tuple[float, float]:
    """(seconds, pooled UF1) of the run of `config` into `run_dir` with this fold batching."""
    options = LosoOptions.of(output=run_dir, folds=folds, fold_batch=fold_batch, wandb="disabled")
    plan = plan_run(config.to_yaml(), options, run_dir)  # prepares the data, untimed
    start = time.perf_counter()
    run_local(run_dir, plan, plan.folds, LocalExecutor(), FoldBatching(fold_batch).size)
    seconds = time.perf_counter() - start
    predictions = pd.concat(pd.read_csv(FoldPaths(run_dir, k).csv) for k in plan.folds)
    return seconds, pooled_metrics(predictions, plan.class_names)["uf1"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmarks.loso_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="ststnet_cde,medn_synthetic")
    parser.add_argument("--epochs", type=int, help="override the epochs of every workload")
    parser.add_argument("--fold-batch", default="auto", help="the new path's --fold-batch (auto or N)")
    parser.add_argument("--published", action="store_true", help="the configs as they are: all folds, all epochs (GPU)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",")]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {sorted(CONFIGS)}")
    root = args.output or Path(tempfile.mkdtemp(prefix="loso_speed_"))
    print(f"device: {args.device} ({device_name(args.device)}), torch {torch.__version__}")
    for name in names:
        config, folds = workload_config(name, args.published, args.epochs, args.device)
        old_s, old_uf1 = timed_run(config, folds, root / name / "sequential", "off")
        new_s, new_uf1 = timed_run(config, folds, root / name / "fold_batched", args.fold_batch)
        n_folds = len(list((root / name / "sequential" / "folds").glob("fold_*.csv")))
        flops, rate, floor = floor_seconds(config, n_folds, args.device)
        print(f"{name}: {n_folds} folds x {config.max_epochs} epochs"
              f"{'' if folds is None else f' (folds {folds})'}\n"
              f"  sequential   {old_s:8.1f} s  UF1 {old_uf1:.4f}\n"
              f"  fold-batched {new_s:8.1f} s  UF1 {new_uf1:.4f}  (--fold-batch {args.fold_batch})\n"
              f"  ratio sequential / fold-batched: {old_s / new_s:.2f}x\n"
              f"  floor: {flops / 1e12:.3f} TFLOP / {rate / 1e9:.1f} GFLOP/s"
              f"{' (or bytes / bandwidth, if longer)' if args.device == 'cuda' else ''} = {floor:.1f} s "
              f"(sequential {old_s / floor:.1f}x, fold-batched {new_s / floor:.1f}x the floor)", flush=True)


if __name__ == "__main__":
    run_benchmark(main)
