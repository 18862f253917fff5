"""Command line: ``lightning`` (LightningCLI: fit/validate/test/predict) and ``mer`` (the same plus
``loso``, ``dataset-info`` and ``prepare``), one jsonargparse subcommand tree.

Lightning 2.5+ no longer installs a ``lightning`` command, so the suite provides one. A branch of the
``mer`` tree is built only when the command line names it, so ``mer --help`` and a mistyped
subcommand answer without importing torch; the Lightning branches are LightningCLI's own parsers.
User errors are one ``error:`` line and exit code 2; Ctrl-C exits 130 with how to resume.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import import_module

from jsonargparse import ArgumentParser

from .command_line import guarded


@dataclass(frozen=True)
class Subcommand:
    """A branch of the `mer` tree: its help line, what an interrupted run keeps, and (for branches
    not run by LightningCLI) the module whose ``build_parser()`` and ``run(args)`` implement it."""

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
                       "--folds, local GPUs/workers or a SLURM array", "finished folds are kept; rerun the same command to resume"),
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


def mer_parser(selected: str | None) -> ArgumentParser:
    """The `mer` tree; only the `selected` branch (of those not run by LightningCLI) gets its options."""
    parser = ArgumentParser(prog="mer", description="Micro-expression recognition: one fold, every fold (LOSO), "
                            "and the data tools.", exit_on_error=False)
    branches = parser.add_subcommands(title="subcommands", metavar="SUBCOMMAND")
    for name, subcommand in SUBCOMMANDS.items():
        if name == selected and subcommand.module:
            branch = import_module(subcommand.module).build_parser()
        else:
            branch = ArgumentParser(description=subcommand.help)
        branches.add_subcommand(name, branch, help=subcommand.help)
        branch.prog = f"mer {name}"  # the root has no options of its own to show as "[options]"
    return parser


def run_lightning(argv: list[str] | None, prog: str) -> None:
    """LightningCLI's fit/validate/test/predict on `argv` (None: LightningCLI reads sys.argv)."""
    from .lightning_cli import deliberate_environment, make_cli

    with deliberate_environment():
        make_cli(argv, prog=prog)


def lightning_main(argv: list[str] | None = None) -> None:
    """The `lightning` command; `argv` only when called from Python (else LightningCLI reads sys.argv)."""
    guarded(lambda: run_lightning(argv, "lightning"), FOLD_RESUME)


def mer_main(argv: list[str] | None = None) -> None:
    """The `mer` command; `argv` only when called from Python (else read from sys.argv)."""
    args = (sys.argv[1:] if argv is None else argv) or ["--help"]
    name = args[0] if args[0] in SUBCOMMANDS else None
    if name in LIGHTNING_SUBCOMMANDS:
        def main() -> None:
            run_lightning(argv, "mer")
    elif name == "loso":
        def main() -> None:
            from .loso import run_loso_command

            run_loso_command(args[1:])
    else:
        def main() -> None:
            config = mer_parser(name).parse_args(args)
            import_module(SUBCOMMANDS[config.subcommand].module).run(config[config.subcommand])
    guarded(main, SUBCOMMANDS[name].resume if name else "nothing was written")
