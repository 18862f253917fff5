"""Command-line options from signatures (a DataModule's ``__init__``, the runner's option groups), so
that names, types, defaults and help are written once; jsonargparse checks the types and words the errors."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Optional, get_origin, get_type_hints

import docstring_parser
from jsonargparse import ArgumentParser


def parameter_help(component: Any) -> dict[str, str]:
    """Parameter name -> its description in the Google-style docstring of `component` (a line
    ``a, b: text`` documents both a and b)."""
    docs = docstring_parser.parse(inspect.getdoc(component) or "")
    return {name.strip(): " ".join(param.description.split()) for param in docs.params
            for name in param.arg_name.split(",")}


class AppendValue(argparse.Action):
    """argparse's ``append`` for a dotted (nested) destination, which jsonargparse's namespaces keep
    as nested keys (argparse's own ``append`` starts a new list at each occurrence there)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option_string: str | None = None) -> None:
        namespace[self.dest] = [*(namespace.get(self.dest) or []), values]


def add_signature_options(parser: ArgumentParser, component: type, skip: Iterable[str] = (),
                          aliases: Mapping[str, str] = {}, overrides_only: bool = False,
                          nested_key: str | None = None) -> None:
    """One ``--dashed-name`` option per ``__init__`` parameter of `component` (a class or dataclass),
    typed and documented as its signature and docstring say; a boolean is also a bare flag, a
    ``tuple[str, ...]`` a repeatable option.

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
        option, dest = f"--{aliases.get(name, name).replace('_', '-')}", f"{nested_key}.{name}" if nested_key else name
        if get_origin(kind) is tuple:  # tuple[str, ...]: a repeatable option, each occurrence adds one value
            parser.add_argument(option, dest=dest, action=AppendValue, default=None if overrides_only else list(default),
                                help=f"{text} (repeatable)".strip())
            continue
        flag = {"nargs": "?", "const": True} if kind is bool else {}
        if name in aliases and kind is not bool and get_origin(kind) is not Literal:
            flag["metavar"] = aliases[name].upper()
        parser.add_argument(option, dest=dest, default=default, help=text, type=Optional[kind] if overrides_only else kind,
                            **flag)
