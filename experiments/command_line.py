"""Command-line plumbing shared by our commands (`mer`, `lightning`, the runner's worker processes),
light enough for `mer --help` (no torch): user errors as one line and exit code 2, Ctrl-C as exit
code 130 with how to resume, and options from signatures.

Options come from signatures (a DataModule's ``__init__``, the runner's :class:`LosoOptions`) so that
names, types, defaults and help are written once; jsonargparse checks the types and words the errors.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional, get_type_hints

import docstring_parser
from jsonargparse import ArgumentError, ArgumentParser

from datamodules.errors import MERError

_NOISE = ("Does not validate against", "Subtypes:", "Errors:", "Given value type:", "Expected a <class 'NoneType'>")


def one_line(err: BaseException) -> str:
    """jsonargparse nests its messages over many lines; keep the informative ones on one line."""
    lines = [line.strip().lstrip("- ") for line in str(err).splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(_NOISE)]
    return " ".join(kept or lines[:1]) or type(err).__name__


def user_error(err: BaseException | None) -> MERError | None:
    """The MERError behind `err`, also when a library re-raised it wrapped (class instantiation)."""
    while err is not None:
        if isinstance(err, MERError):
            return err
        err = err.__cause__ or err.__context__
    return None


def guarded(main: Callable[[], Any], resume: str = "rerun the same command to resume") -> None:
    """Run `main`; user errors become one line on stderr and exit code 2, Ctrl-C exit code 130 with
    `resume` (what was kept and how to go on)."""
    try:
        main()
    except KeyboardInterrupt:
        interrupted(resume)
    except SystemExit as exit_:
        if exit_.code != 130 and isinstance(exit_.__context__, KeyboardInterrupt):  # Lightning: Ctrl-C -> exit(1)
            interrupted(resume)
        raise
    except Exception as err:
        mer_error = user_error(err)
        if mer_error is None and not isinstance(err, ArgumentError):
            raise
        print(f"error: {mer_error or one_line(err) + ' (see --help)'}", file=sys.stderr)
        sys.exit(2)


def interrupted(resume: str) -> None:
    print(f"interrupted: {resume}", file=sys.stderr)
    sys.exit(130)


def parameter_help(component: Any) -> dict[str, str]:
    """Parameter name -> its description in the Google-style docstring of `component` (a line
    ``a, b: text`` documents both a and b)."""
    docs = docstring_parser.parse(inspect.getdoc(component) or "")
    return {name.strip(): " ".join(param.description.split()) for param in docs.params
            for name in param.arg_name.split(",")}


def add_signature_options(parser: ArgumentParser, component: type, skip: Iterable[str] = (),
                          aliases: Mapping[str, str] = {}, overrides_only: bool = False,
                          nested_key: str | None = None) -> None:
    """One ``--dashed-name`` option per ``__init__`` parameter of `component` (a class or dataclass),
    typed and documented as its signature and docstring say; a boolean is also a bare flag.

    `aliases` gives a parameter a shorter option name. With `overrides_only` every option defaults to
    None (= not given, the signature's default shown in the help) so that it can override a config.
    Values are parsed into `nested_key` (e.g. ``args.data.root``) if given.
    """
    hints = get_type_hints(component.__init__)
    helps = parameter_help(component)
    for name, param in inspect.signature(component.__init__).parameters.items():
        if name == "self" or name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        kind = hints[name]
        default = None if overrides_only else param.default
        text = helps.get(name, "")
        if overrides_only and param.default not in (None, inspect.Parameter.empty):
            text = f"{text} (default {param.default})".strip()
        flag = {"nargs": "?", "const": True} if kind is bool else {}
        parser.add_argument(f"--{aliases.get(name, name).replace('_', '-')}", dest=f"{nested_key}.{name}" if nested_key else name, default=default, help=text,
                            type=Optional[kind] if overrides_only else kind, **flag)
