"""``--help`` of `lightning` and `mer loso` without importing Lightning (which takes seconds).

Their full parsers are LightningCLI's: every Trainer argument and the init arguments of every model and
datamodule, read from the classes, so building them imports Lightning, torch and every model. The help
asked for most often does not need that: `lightning --help` lists the subcommands, and `mer loso --help`
lists the runner's options (the same groups, :func:`add_loso_options`) and how the config's own options
are given and listed (`mer fit --help`, the full LightningCLI help).
"""

from __future__ import annotations

from jsonargparse import ArgumentParser

from .runner.options import add_loso_options

HELP_FLAGS = ("-h", "--help")
# LightningCLI's subcommands and their help lines (Lightning's own words, shortened)
LIGHTNING_SUBCOMMANDS = {
    "fit": "Runs the full optimization routine.",
    "validate": "Perform one evaluation epoch over the validation set.",
    "test": "Perform one evaluation epoch over the test set (--ckpt_path FILE).",
    "predict": "Run inference on your data with a checkpoint (--ckpt_path FILE).",
}
CONFIG_OPTIONS = (
    "The config is read as `mer fit` reads it (LightningCLI): -c/--config FILE (repeatable, later files override), "
    "then any key as an option: --seed_everything N, --trainer.KEY VALUE (e.g. --trainer.max_epochs 3), "
    "--model.init_args.KEY VALUE, --data.init_args.KEY VALUE, --model CLASS_PATH, --data CLASS_PATH; "
    "--print_config prints the resolved config and exits. Every one of these with its type and default: "
    "`mer fit --help` (imports Lightning: a few seconds); one class's arguments: "
    "`mer fit --model.help lightning_modules.MEDN`, `mer fit --data.help datamodules.SyntheticDataModule`."
)


def quick_parser(prog: str, args: list[str]) -> ArgumentParser | None:
    """The light parser whose help answers `prog ARGS` (`lightning`, `mer loso`), None where the full one must."""
    if not any(arg in HELP_FLAGS for arg in args):
        return None
    if prog == "mer loso":
        return loso_parser()
    if prog == "lightning" and not set(args) & set(LIGHTNING_SUBCOMMANDS):
        return lightning_parser(prog)
    return None


def lightning_parser(prog: str) -> ArgumentParser:
    """`lightning --help`: the subcommands and the top-level options of the suite's LightningCLI."""
    parser = ArgumentParser(prog=prog, description="Lightning Trainer command line tool (the suite's LightningCLI: "
                            "models and datamodules by class_path)", exit_on_error=False)
    parser.add_argument("-c", "--config", help="Path to a configuration file in json or yaml format.")
    parser.add_argument("--print_config", nargs="?", metavar="=flags", help="Print the configuration after applying all other arguments and exit.")
    branches = parser.add_subcommands(title="subcommands", metavar="SUBCOMMAND",
                                      description="For more details of each subcommand, add it as an argument "
                                                  "followed by --help.")
    for name, text in LIGHTNING_SUBCOMMANDS.items():
        branches.add_subcommand(name, ArgumentParser(description=text), help=text)
    return parser


def loso_parser() -> ArgumentParser:
    """`mer loso --help`: the config's options in words, then the runner's options as the full parser adds them."""
    parser = ArgumentParser(prog="mer loso", exit_on_error=False,
                            description="Every fold of a config (leave-one-subject-out or k-fold), then UF1/UAR "
                                        "once on the pooled predictions. The runner's options are listed first, "
                                        "the config's below ('config (LightningCLI)').")
    config = parser.add_argument_group("config (LightningCLI)", description=CONFIG_OPTIONS)
    config.add_argument("-c", "--config", metavar="CONFIG", help="a `lightning fit` config file, e.g. configs/medn/synthetic.yaml")
    config.add_argument("--print_config", nargs="?", metavar="=flags", help="print the resolved config and exit")
    add_loso_options(parser)
    return parser
