"""Command line: ``lightning`` (LightningCLI: fit/validate/test/predict) and ``mer`` (the same plus ``loso``).

Lightning 2.5+ no longer installs a ``lightning`` command, so the suite provides one. Models and
datamodules are chosen with ``class_path``/``init_args``; the datamodule's label space
(``num_classes``, ``num_aus``) is linked into the model.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from datamodules.loso import LOSODataModule
from lightning_modules.base import MERClassifier

from datamodules.errors import MERError

MER_USAGE = """usage: mer {fit,validate,test,predict,loso,dataset-info,prepare} ...

  fit / validate / test / predict   one fold, as `lightning` (LightningCLI; see `mer fit --help`)
  loso --config CFG [--output DIR] [--wandb offline|online|disabled] [overrides...]
                                    every fold of leave-one-subject-out, pooled UF1/UAR
  dataset-info DATASET --annotations SHEET --protocol P [--json]
                                    samples, subjects, class counts and sheet warnings (no frames needed)
  prepare DATASET --root PATH --protocol P [--preview] ...
                                    validate a release on disk, then face + flow preprocessing into the cache
"""

SUBCOMMANDS = {
    "loso": "experiments.loso:loso_main",
    "dataset-info": "experiments.dataset_info:dataset_info_main",
    "prepare": "experiments.prepare:prepare_main",
}


class MERCLI(LightningCLI):
    """LightningCLI with the datamodule's label space linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_aus", "model.init_args.num_aus", apply_on="instantiate")


def make_cli(args: list[str] | None, run: bool = True, **kwargs: Any) -> MERCLI:
    """Build (and by default run) the CLI on `args`; parse errors raise instead of exiting."""
    return MERCLI(
        MERClassifier,
        LOSODataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        seed_everything_default=0,
        args=args,
        run=run,
        parser_kwargs={"exit_on_error": False},
        **kwargs,
    )


_NOISE = ("Does not validate against", "Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'>")


def one_line(err: BaseException) -> str:
    """jsonargparse nests its messages over many lines; keep the informative ones on one line."""
    lines = [line.strip().lstrip("- ") for line in str(err).splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(_NOISE) and not line.lstrip("- ").startswith(_NOISE)]
    return " ".join(kept or lines[:1]) or type(err).__name__


def _user_error(err: BaseException) -> MERError | None:
    """The MERError behind `err`, also when a library re-raised it wrapped (class instantiation)."""
    while err is not None:
        if isinstance(err, MERError):
            return err
        err = err.__cause__ or err.__context__
    return None


def guarded(main: Callable[[], Any]) -> None:
    """Run `main`; user errors become one line on stderr and exit code 2."""
    try:
        main()
    except Exception as err:
        user_error = _user_error(err)
        if user_error is None and not isinstance(err, ArgumentError):
            raise
        print(f"error: {user_error or one_line(err) + ' (see --help, or --print_config for the resolved config)'}",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished folds and prepared clips are kept; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


def lightning_main(argv: list[str] | None = None) -> None:
    guarded(lambda: make_cli(argv if argv is not None else sys.argv[1:]))


def mer_main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(MER_USAGE)
        return
    if argv[0] in SUBCOMMANDS:
        module, function = SUBCOMMANDS[argv[0]].split(":")
        main = getattr(importlib.import_module(module), function)
        guarded(lambda: main(argv[1:]))
    else:
        lightning_main(argv)
