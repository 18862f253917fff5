"""The suite's LightningCLI: what `lightning`/`mer fit|validate|test|predict` run, what `mer loso` parses
(``experiments.loso.LosoCLI``) and what every fold job of the runner instantiates.

Models and datamodules are chosen with ``class_path``/``init_args``; the datamodule's label space
(``num_classes``, ``num_aus``) and its fold's training subjects (``num_identities``) are linked into
the model. Lightning's own chatter is stopped where it starts (see :func:`quiet_lightning`), and the
cluster environment is chosen deliberately: SLURM's inside a SLURM job, the plain local one elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentError, Namespace
from lightning.fabric.plugins.environments import ClusterEnvironment, LightningEnvironment, SLURMEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf.errors import OmegaConfBaseException

from datamodules.errors import MERError
from datamodules.loso import LOSODataModule
from lightning_modules.base import MERClassifier

from .config_files import PARSER_MODE
from .misspelt_keys import misspelt_key

# Loggers of Lightning's informational lines that our commands do not show: the device report ("GPU
# available: ...", "TPU available: ...", the CUDA_VISIBLE_DEVICES line), install tips ("💡 Tip: ...
# litlogger / litmodels") and "Seed set to N" (the seed is in the config). Warnings and errors stay.
CHATTY_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                  "lightning.fabric.utilities.seed")
# Every parser of the suite's LightningCLI (the main one and each subcommand's): errors raise (our commands
# word them in one line), and config files may interpolate values and extend a base file (config_files).
PARSER = {"exit_on_error": False, "parser_mode": PARSER_MODE}
# ckpt_path values Lightning resolves itself (not files)
SPECIAL_CHECKPOINTS = ("best", "last", "hpc", "registry")


# Lightning (up to 2.6.6, the newest release) builds torch's `LeafSpec()` in `_tree_flatten`
# (lightning/pytorch/utilities/_pytree.py) for every CombinedLoader, i.e. for each fit and predict loop, and torch
# 2.13 deprecates that class: a FutureWarning about Lightning's own code that a user can do nothing about.
LEAFSPEC_DEPRECATION = {"message": r"`isinstance\(treespec, LeafSpec\)` is deprecated", "category": FutureWarning,
                        "module": r"lightning\.pytorch\.utilities\._pytree"}


def quiet_lightning() -> None:
    """Raise the level of :data:`CHATTY_LOGGERS` to WARNING and hide :data:`LEAFSPEC_DEPRECATION`, that one
    warning of that one module (called by our commands, not on import)."""
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", **LEAFSPEC_DEPRECATION)


def on_slurm() -> bool:
    """Whether this process runs inside a SLURM job (then Lightning's SLURM environment is used)."""
    return "SLURM_JOB_ID" in os.environ


def cluster_environment() -> ClusterEnvironment:
    """SLURM's environment (requeue on USR1) inside a SLURM job, the single-machine one elsewhere."""
    return SLURMEnvironment() if on_slurm() else LightningEnvironment()


@contextlib.contextmanager
def deliberate_environment() -> Iterator[None]:
    """Around a run that uses :func:`cluster_environment`: outside SLURM, Lightning still probes
    ``SLURMEnvironment.detect()`` when ``fit`` gets no checkpoint path, which warns that ``srun`` is
    installed but unused. The local environment was chosen on purpose, so the warnings of that one
    module are not shown there; under SLURM nothing is hidden."""
    with warnings.catch_warnings():
        if not on_slurm():
            warnings.filterwarnings("ignore", module=r"lightning\.fabric\.plugins\.environments\.slurm")
        yield


def check_accelerator(accelerator: Any) -> None:
    """Refuse a GPU accelerator (``gpu``, ``cuda``, ``mps``) that this machine does not have, in words a user
    can act on (Lightning's own error is a traceback)."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        shown = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise MERError(f"--trainer.accelerator {accelerator}: torch sees no CUDA GPU on this machine{shown}; "
                       "use --trainer.accelerator auto (a GPU where there is one) or cpu")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise MERError("--trainer.accelerator mps: this machine has no Apple MPS device; use --trainer.accelerator auto or cpu")


def with_cluster_environment(plugins: Any) -> list[Any]:
    """The configured trainer plugins, plus :func:`cluster_environment` unless one of them is one."""
    plugins = plugins if isinstance(plugins, list) else [] if plugins is None else [plugins]
    if any(isinstance(plugin, ClusterEnvironment) for plugin in plugins):
        return plugins
    return [*plugins, cluster_environment()]


class MERCLI(LightningCLI):
    """LightningCLI with the datamodule's label space linked into the model, a deliberate cluster
    environment and logger, and a missing checkpoint reported before anything is built."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("num_classes", "num_aus", "num_identities"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse `args` (None: ``sys.argv``). Our commands hand over their own argv, or a fold's config,
        on purpose: Lightning's warning about `args` given beside ``sys.argv`` does not apply. A misspelt key
        is named with the closest accepted one (:func:`misspelt_key`)."""
        try:
            self.config = parser.parse_object(args) if isinstance(args, (dict, Namespace)) else parser.parse_args(args)
        except OmegaConfBaseException as err:  # an interpolation ${a.b} naming a key the config does not have
            where = f" at {err.full_key}" if getattr(err, "full_key", None) else ""
            raise MERError(f"config{where}: {str(err).splitlines()[0]}; an interpolation ${{a.b}} names a key of the "
                           "config (is this a `lightning fit` config of trainer/model/data?)") from None
        except ArgumentError as err:
            parsers = [parser, *getattr(self, "_subcommand_parsers", {}).values()]
            options = sorted({option for each in parsers for action in each._actions for option in action.option_strings
                              if option.startswith("--")})
            message = misspelt_key(str(err), options, {"trainer": Trainer})
            if message is None:
                raise
            raise MERError(message) from None

    def _parse_ckpt_path(self) -> None:
        """Lightning reads --ckpt_path's hyper-parameters right after parsing (``LightningCLI._parse_ckpt_path``,
        a traceback for a file that is no checkpoint): the checkpoint is checked first."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if subcommand in ("test", "predict") and not ckpt_path:
            raise MERError(f"{subcommand} needs --ckpt_path FILE (e.g. a fold's folds/fold_003/last.ckpt); "
                           "without it the model's untrained weights would be evaluated")
        if ckpt_path and ckpt_path.split(":")[0] not in SPECIAL_CHECKPOINTS and "://" not in ckpt_path:
            if not Path(ckpt_path).is_file():
                raise MERError(f"checkpoint not found: {ckpt_path} (--ckpt_path takes a .ckpt file, 'best' or 'last')")
            if not zipfile.is_zipfile(ckpt_path):  # torch.save's format; a truncated one lacks the zip's end record
                raise MERError(f"--ckpt_path {ckpt_path} is not a checkpoint (a .ckpt file Lightning saved), or it is "
                               "truncated; give another one")
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_accelerator(config.get("trainer", Namespace()).get("accelerator"))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The configured Trainer with :func:`cluster_environment` among its plugins and, where the config
        leaves the logger to Lightning, the CSV logger Lightning would pick (without tensorboard) named."""
        config = self._get(self.config_init, "trainer", default={})
        kwargs.setdefault("plugins", with_cluster_environment(config.get("plugins")))
        if config.get("logger") in (None, True) and not config.get("barebones"):
            kwargs.setdefault("logger", CSVLogger(save_dir=config.get("default_root_dir") or os.getcwd()))
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ModuleNotFoundError) as err:  # Lightning's words for a trainer setting
            # it cannot use here (a ModuleNotFoundError: an accelerator's package, e.g. torch_xla for tpu)
            raise MERError(f"trainer config: {' '.join(str(err).split())} (see `mer fit --help`)") from None
        fit_loops_to_fold(trainer, self.datamodule, config)
        return trainer


def fit_loops_to_fold(trainer: Trainer, datamodule: LOSODataModule, trainer_config: dict[str, Any]) -> None:
    """Loop settings that follow from the fold, where the config leaves them to Lightning: no
    validation loop without an inner validation split (nor Lightning's empty-loader warning), and a
    log row every epoch at least (``log_every_n_steps`` at most the batches of an epoch per rank)."""
    if not datamodule.val_subjects and trainer_config.get("limit_val_batches") is None:
        trainer.limit_val_batches = 0
    if trainer_config.get("log_every_n_steps") is None:
        batches = math.ceil(len(datamodule.split()["train"]) / (datamodule.batch_size * trainer.world_size))
        trainer.log_every_n_steps = max(1, min(50, batches))


def make_cli(args: list[str] | dict[str, Any] | None, run: bool = True, prog: str | None = None,
             cli_class: type[MERCLI] = MERCLI, **kwargs: Any) -> MERCLI:
    """Build (and by default run) the CLI on `args` (None: ``sys.argv``); parse errors raise instead of exiting."""
    quiet_lightning()
    return cli_class(
        MERClassifier,
        LOSODataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        seed_everything_default=0,
        args=args,
        run=run,
        parser_kwargs={**PARSER, **({"prog": prog} if prog else {}),
                       **{subcommand: dict(PARSER) for subcommand in cli_class.subcommands()}},
        **kwargs,
    )
