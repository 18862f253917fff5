"""``mer sweep SPEC.yaml``: a hyper-parameter study of whole LOSO runs on Optuna, local or on SLURM.

    mer sweep configs/sweeps/medn_lambda_au.yaml --parallel 2              # two local workers
    mer sweep configs/sweeps/medn_lambda_au.yaml --devices 0,1,2,3         # one worker per GPU
    mer sweep configs/sweeps/medn_lambda_bayes.yaml --trials 30 --launcher slurm --parallel 8 --gpus-per-task 1
    mer sweep configs/sweeps/medn_lambda_au.yaml --config configs/medn/casme3.yaml --data.init_args.root DIR

SPEC is a W&B sweep YAML (see ``experiments.sweep.spec``): grid -> every grid point once
(Optuna's GridSampler), bayes -> TPE, random -> random sampling (``--trials N``). LightningCLI options
after SPEC (``--config FILE``, ``--data.init_args.root DIR``, ``--trainer.max_epochs 5``) are the base of
every trial: ``--config`` replaces the spec's config, the others override it. The study is a
journal file in the output directory; every worker pulls trials from it, each trial is one
``mer loso`` run into ``OUTPUT/trials/<params>/`` (logged to W&B, offline by default). A trial whose
worker dies is queued again and resumes its finished folds; rerunning the command resumes the study.
Afterwards: trials.csv (printed too), figure6.png (the metric against each parameter, MEDN Fig. 6)
and, for a 2-D grid, heatmap.png.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from jsonargparse import ArgumentParser, Namespace

from datamodules.errors import MERError

from ..runner.slurm_options import SlurmOptions
from ..signature_options import add_signature_options

DEFAULT_OUTPUT = Path("outputs/sweeps")
# SlurmOptions given by the sweep's own options above (or meaningless for worker tasks); the rest are mer loso's
SWEEP_SLURM_OWN = ("launcher", "partition", "time", "gpus_per_task", "cpus_per_task", "array_parallelism",
                   "folds_per_task", "dry_run")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="mer sweep", exit_on_error=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="a W&B sweep YAML (configs/sweeps/*.yaml); LightningCLI options "
                        "beside it (--config FILE, --data.init_args.root DIR, --trainer.max_epochs N) are every "
                        "trial's base: --config replaces the spec's config, the others override it")
    parser.add_argument("--output", type=Optional[Path], default=None,
                        help=f"study directory (default {DEFAULT_OUTPUT}/<spec name>); rerun to resume")
    parser.add_argument("--launcher", type=Literal["local", "slurm"], default="local",
                        help="local worker processes, or a SLURM array of worker tasks")
    parser.add_argument("--parallel", type=int, default=1, help="workers (local processes or SLURM array tasks)")
    parser.add_argument("--trials", type=Optional[int], default=None,
                        help="trials of a bayes/random study (default: the spec's run_cap); a grid runs every point")
    parser.add_argument("--devices", type=Optional[str], default=None,
                        help="local GPU ids, e.g. 0,1: one worker per GPU (replaces --parallel)")
    parser.add_argument("--wandb", type=Literal["offline", "online", "disabled"], default="offline",
                        help="W&B mode of every trial's runs")
    parser.add_argument("--threads-per-fold", type=Optional[int], default=None,
                        help="intra-op threads of each fold (default: CPUs / workers, or --cpus-per-task)")
    parser.add_argument("--heartbeat", type=float, default=30.0,
                        help="seconds between a running trial's heartbeats (our choice)")
    parser.add_argument("--grace-period", type=float, default=120.0,
                        help="a running trial without heartbeat for this long lost its worker and is retried (our choice)")
    parser.add_argument("--max-retry", type=int, default=3, help="retries of a trial whose worker died (our choice)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (worker i uses seed + i)")
    parser.add_argument("--partition", type=Optional[str], default=None, help="SLURM partition")
    parser.add_argument("--time", default="24:00:00", help="SLURM time limit per worker task (our choice)")
    parser.add_argument("--cpus-per-task", type=int, default=2, help="CPUs per SLURM worker task")
    parser.add_argument("--gpus-per-task", type=int, default=0, help="GPUs per SLURM worker task")
    parser.add_argument("--dry-run", type=bool, nargs="?", const=True, default=False,
                        help="--launcher slurm: write and print the sbatch scripts, submit nothing")
    add_signature_options(parser, SlurmOptions, skip=SWEEP_SLURM_OWN, nested_key="slurm")
    return parser


def main(argv: list[str]) -> None:
    """`mer sweep` on `argv`: its own options, and LightningCLI options (the study's base overrides)."""
    from .spec import split_loso_overrides

    own, overrides = split_loso_overrides(argv)
    run(build_parser().parse_args(own), overrides)


def run(args: Namespace, overrides: list[str]) -> None:
    from ..runner.options import LocalExecutor, parse_devices
    from .launch import launch_slurm, run_local_workers
    from ..output_folder import check_output_folder, writing_into
    from .setup import check_output, check_spec, claim_output
    from .spec import load_spec
    from .study import SETTINGS, SweepSettings, open_study, requeue_failed, unfinished, unretried_failures
    from .summary import summarize

    if args.trials is not None and args.trials < 1:
        raise MERError(f"--trials {args.trials}: give a positive number of trials")
    spec = load_spec(args.spec)
    output = args.output or DEFAULT_OUTPUT / spec.path.stem
    trials = args.trials or (SweepSettings.load(output).trials if (output / SETTINGS).exists() else None)
    spec = spec.with_base(overrides, trials)
    spec.budget  # a bayes/random study without --trials or run_cap: one line, before anything is written
    devices = parse_devices(args.devices) if args.devices else None
    if devices and args.launcher == "local":
        LocalExecutor(devices=args.devices).check_visible()
    workers = len(devices) if devices else args.parallel
    if workers < 1 or args.heartbeat <= 0 or args.grace_period <= args.heartbeat or args.max_retry < 0:
        raise MERError("give --parallel >= 1, --heartbeat > 0, --grace-period > --heartbeat and --max-retry >= 0")
    slurm = SlurmOptions(launcher="slurm", partition=args.partition, time=args.time, cpus_per_task=args.cpus_per_task,
                         gpus_per_task=args.gpus_per_task, dry_run=args.dry_run, **args.slurm.as_dict())
    if args.launcher == "slurm":
        if devices:
            raise MERError("--devices picks local GPUs; on SLURM give --gpus-per-task (each task uses the GPUs it gets)")
        slurm.check()
    check_output_folder(output)
    check_output(spec, output, overrides)
    check_spec(spec, output)
    with writing_into(output):
        claim_output(spec, output)
    cpus = args.cpus_per_task if args.launcher == "slurm" else len(os.sched_getaffinity(0))
    SweepSettings(loso_overrides=overrides, trials=spec.run_cap, wandb=args.wandb, heartbeat=args.heartbeat,
                  grace_period=args.grace_period, max_retry=args.max_retry,
                  seed=args.seed, threads_per_fold=args.threads_per_fold or max(1, cpus // workers)).save(output)
    study = open_study(output, spec, args.seed)
    requeued = requeue_failed(study)
    if requeued:
        print(f"failed trial(s) {', '.join(map(str, requeued))} queued again (their LOSO runs resume)")
    if args.launcher == "slurm":
        launch_slurm(output, workers, slurm)
        return
    codes = run_local_workers(output, study, workers, devices)
    summarize(study, spec, output)
    failed = unretried_failures(study)
    if unfinished(study, spec) or failed:  # a dead worker alone is no failure: the others finished its trial
        raise MERError(f"the study in {output} is not finished (failed trials {failed or 'none'}, worker exit codes "
                       f"{codes}; logs in {output}/logs/); rerun the same command to resume it")
