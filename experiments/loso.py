"""``mer loso``: every fold of a config, then UF1/UAR/accuracy once on the pooled predictions.

Each fold gets a fresh model and Trainer built from the same resolved config, seeded with
``seed_everything + fold``, trained for the configured epochs (or early-stopped on an inner
validation split of training subjects); its LAST weights, or the checkpoint a ModelCheckpoint chose
on that inner validation split, predict the held-out samples. Nothing is selected on them. The
folds follow the datamodule's fold plan (LOSO, subject k-fold or an official split). The run is planned first (every check before
anything is written), then its folds are run as jobs by an executor (``experiments.runner``),
then pooled. This module is the command: it parses the config and the runner's options.

Output directory::

    config.yaml  run.json          resolved config, its hash, seed and executor settings (a rerun must match)
    fold_plan.json                 every fold's train/val/test subjects and test samples (a rerun must match)
    folds/fold_007.csv             predictions of a finished fold (a rerun skips it)
    folds/fold_007.json            which weights predicted it and why (last epoch or inner-validation checkpoint)
    folds/fold_007/                its CSV logs (logs/version_*/), last.ckpt (resume point), previous.ckpt
    wandb/                         offline W&B runs (one per fold + one 'pooled'), `wandb sync`
    predictions.csv  metrics.json  confusion_matrix.png

With ``--seeds 0,1,2`` each seed N is such a run directory ``OUTPUT/seed_N`` (``seed_everything`` N),
and ``OUTPUT/seeds_summary.json`` / ``.png`` hold mean ± std over the seeds (``runner.seed_runs``).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser

from .lightning_cli import MERCLI, make_cli
from .runner.options import LosoOptions, RunScope, add_loso_options, drop_loso_options
from .runner.orchestration import run_loso


class LosoCLI(MERCLI):
    """`mer loso`: a one-fold config as `lightning fit` reads it (``--config``, overrides), plus the
    runner's options (:class:`LosoOptions`, e.g. ``--folds 0-3``). Parses only: the runner builds
    every fold itself from the resolved config."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        add_loso_options(parser)

    def instantiate_classes(self) -> None:
        """Nothing to build here (the runner instantiates each fold)."""

    def options(self) -> LosoOptions:
        return LosoOptions.from_parsed(self.config)

    def fold_config_yaml(self) -> str:
        """The resolved config without the runner's options, as ``lightning fit --print_config`` would
        print it without the subcommand level."""
        config = self.config.clone()
        drop_loso_options(config)
        return self.parser.dump(config, skip_none=False, skip_check=True)


def parse(args: list[str]) -> LosoCLI:
    """`mer loso ARGS` parsed: the resolved config and the runner's options."""
    return make_cli(args, run=False, prog="mer loso", cli_class=LosoCLI)


def main(args: list[str]) -> None:
    """`mer loso`: parse the fold config and the runner options, then hand both to the runner."""
    aggregate_only = _value_of("--aggregate-only", args)
    if aggregate_only is not None:  # pools a planned run: its own config.yaml is the config
        run_loso("", LosoOptions(scope=RunScope(aggregate_only=Path(aggregate_only))))
        return
    cli = parse(args)
    options = cli.options()
    config_file = _value_of(("--config", "-c"), args)
    if options.scope.output is None and config_file is not None:
        options.scope.output = default_output(config_file)
    run_loso(cli.fold_config_yaml(), options)


def default_output(config_path: str) -> Path:
    path = Path(config_path)
    return Path("outputs") / f"{path.parent.name}-{path.stem}"


def _value_of(options: str | tuple[str, ...], args: list[str]) -> str | None:
    """The first value of an option (any of `options`) given as `--option VALUE` or `--option=VALUE`, else None."""
    names = (options,) if isinstance(options, str) else options
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(tuple(name + "=" for name in names)):
            return arg.split("=", 1)[1]
    return None
