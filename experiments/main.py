"""The entry points: ``lightning`` (LightningCLI: fit/validate/test/predict) and ``mer`` (the same plus
``loso``, ``probe``, ``sweep``, ``report``, ``audit``, ``dataset-info`` and ``prepare``).

Lightning 2.5+ no longer installs a ``lightning`` command, so the suite provides one. Every other
subcommand is a module with ``main(argv)``, imported only when the command line names it, so
``mer --help`` and a mistyped subcommand answer without importing torch (from a jsonargparse tree of
the subcommands' help lines). User errors are one ``error:`` line and exit code 2; Ctrl-C exits 130
with how to resume.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import import_module

from jsonargparse import ArgumentParser

from .exit_codes import guarded


@dataclass(frozen=True)
class Subcommand:
    """A subcommand of `mer`: its help line, what an interrupted run keeps, and (for those not run by
    LightningCLI) the module whose ``main(argv)`` implements it."""

    help: str
    resume: str
    module: str | None = None


FOLD_RESUME = "prepared clips are kept; epoch checkpoints are under the run's checkpoints/ folder (continue with --ckpt_path FILE)"
SUBCOMMANDS = {
    "fit": Subcommand("train one fold (LightningCLI; see `mer fit --help`)", FOLD_RESUME),
    "validate": Subcommand("validate one fold's model", FOLD_RESUME),
    "test": Subcommand("test a checkpoint (--ckpt_path FILE) on one fold's held-out subject", FOLD_RESUME),
    "predict": Subcommand("predict one fold's held-out subject with a checkpoint (--ckpt_path FILE)", FOLD_RESUME),
    "loso": Subcommand("every fold of a config (leave-one-subject-out or k-fold), pooled UF1/UAR; "
                       "--folds, local GPUs/workers or a SLURM array", "finished folds are kept; rerun the same command to resume",
                       "experiments.loso"),
    "probe": Subcommand("how much subject identity each fold's features carry (linear probe on a finished run dir)",
                        "nothing was written", "experiments.probe"),
    "sweep": Subcommand("a hyper-parameter study (Optuna: grid or TPE) of whole LOSO runs, local or on SLURM",
                        "finished trials are kept in the study journal; rerun the same command to resume", "experiments.sweep"),
    "study": Subcommand("a study spec (configs/studies/): rows x replicate seeds of mer loso, their measures, a mean ± std table",
                        "finished folds and measures are kept; rerun the same command to resume", "experiments.studies"),
    "report": Subcommand("one results table (md/csv/latex) and confusion matrices across run directories",
                         "nothing was written", "experiments.report"),
    "audit": Subcommand("honesty checks of a run dir or a foreign predictions CSV (pooled vs averaged scores)",
                        "nothing was written", "experiments.audit"),
    "dataset-info": Subcommand("samples, subjects, class counts and sheet warnings of an annotation sheet (no frames needed)",
                               "nothing was written", "experiments.dataset_info"),
    "prepare": Subcommand("check a release on disk, then face + flow preprocessing into the cache",
                          "prepared clips are kept; rerun the same command to resume", "experiments.prepare"),
}
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def mer_parser() -> ArgumentParser:
    """The `mer` tree of subcommand names and help lines: ``mer --help`` and unknown subcommands."""
    parser = ArgumentParser(prog="mer", description="Micro-expression recognition: one fold, every fold (LOSO), "
                            "and the data tools.", exit_on_error=False)
    branches = parser.add_subcommands(title="subcommands", metavar="SUBCOMMAND")
    for name, subcommand in SUBCOMMANDS.items():
        branches.add_subcommand(name, ArgumentParser(description=subcommand.help), help=subcommand.help)
    return parser


def run_lightning(argv: list[str] | None, prog: str) -> None:
    """LightningCLI's fit/validate/test/predict on `argv` (None: LightningCLI reads sys.argv)."""
    from .lightning_cli import deliberate_environment, make_cli  # imports Lightning: only when a fold runs

    with deliberate_environment():
        make_cli(argv, prog=prog)


def quick_help(prog: str, args: list[str]) -> bool:
    """Print the help of `prog ARGS` without importing Lightning where it can be (``experiments.quick_help``)."""
    from .quick_help import quick_parser

    parser = quick_parser(prog, args)
    if parser is not None:
        parser.print_help()
    return parser is not None


def lightning_main(argv: list[str] | None = None) -> None:
    """The `lightning` command; `argv` only when called from Python (else LightningCLI reads sys.argv)."""
    if not quick_help("lightning", sys.argv[1:] if argv is None else argv):
        guarded(lambda: run_lightning(argv, "lightning"), FOLD_RESUME)


def mer_main(argv: list[str] | None = None) -> None:
    """The `mer` command; `argv` only when called from Python (else read from sys.argv)."""
    args = (sys.argv[1:] if argv is None else argv) or ["--help"]
    name = args[0] if args[0] in SUBCOMMANDS else None
    if name is None:
        guarded(lambda: mer_parser().parse_args(args), "nothing was written")  # help, or names the subcommands
    elif quick_help(f"mer {name}", args[1:]):
        return
    elif name in LIGHTNING_SUBCOMMANDS:
        guarded(lambda: run_lightning(argv, "mer"), SUBCOMMANDS[name].resume)
    else:
        guarded(lambda: import_module(str(SUBCOMMANDS[name].module)).main(args[1:]), SUBCOMMANDS[name].resume)
