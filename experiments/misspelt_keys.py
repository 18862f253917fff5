"""A mistyped config key (``lamda_au:`` under ``model.init_args``, ``--trainer.max_epoch``) in one line with
the closest accepted name, instead of jsonargparse's message (which repeats every given init argument)."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import typing
from collections.abc import Mapping
from importlib import import_module
from typing import Any

# jsonargparse's words for a key that its class or group does not have
IN_CLASS = re.compile(r"Problem with given class_path '([\w.]+)':\s+(?:Option '(\w+)' is not accepted|"
                      r"Group '(\w+)' does not accept option '(\w+)'|unrecognized arguments: --([\w.]+))")
IN_GROUP = re.compile(r"^Group '(\w+)' does not accept option '(\w+)'")
UNRECOGNIZED = re.compile(r"^unrecognized arguments: --([\w.-]+)")
PARSER_KEY = re.compile(r'^Parser key "(\w+)"')  # model or data
AT_TOP = re.compile(r"^Option '([\w.]+)' is not accepted")  # a config file's top-level key
NO_CLASS = re.compile(r"class_path '([\w.]+)':\s+module '([\w.]+)' has no attribute '(\w+)'")


def accepted(component: Any) -> list[str]:
    """The keys `component` takes: a dataclass's fields, else its ``__init__``'s named parameters."""
    if dataclasses.is_dataclass(component):
        return [f.name for f in dataclasses.fields(component) if f.init]
    parameters = inspect.signature(component.__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def member_type(component: Any, name: str) -> Any:
    """The class annotated for parameter `name` of `component` (``Optional[X]`` -> X), None if none."""
    hint = typing.get_type_hints(component.__init__).get(name)
    classes = [arg for arg in (typing.get_args(hint) or (hint,)) if inspect.isclass(arg) and arg is not type(None)]
    return classes[0] if classes else None


def suggestion(bad: str, where: str, names: list[str], listed_by: str, kind: str = "key") -> str:
    close = difflib.get_close_matches(bad, names, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"its {kind}s: {listed_by}"
    return f"{where} has no {kind} '{bad}'; {hint}"


def misspelt_key(message: str, options: list[str], groups: Mapping[str, Any]) -> str | None:
    """The one-line message for jsonargparse's `message` if it is about a key that does not exist: in a
    class given by class_path (model, data, or a group of theirs such as ``tvl1``), in one of `groups`
    (``trainer``: Trainer), or an option not among the command's `options` (``--worker``); None for any
    other error."""
    found = NO_CLASS.search(message)
    if found:
        class_path, module, name = found.groups()
        exported = getattr(import_module(module), "__all__", [])
        return suggestion(name, f"class_path {class_path}: {module}", exported, ", ".join(exported), kind="class")
    found = IN_CLASS.search(message)
    if found:
        class_path, option, group, group_option, dotted = found.groups()
        component = getattr(import_module(class_path.rsplit(".", 1)[0]), class_path.rsplit(".", 1)[1])
        key = PARSER_KEY.search(message)
        help_command = f"see `mer fit --{key.group(1) if key else 'model'}.help {class_path}`"
        if dotted:  # --model.init_args.a.b: the first unknown part
            group, _, group_option = dotted.partition(".")
            if group not in accepted(component):
                return suggestion(group, class_path, accepted(component), help_command)
        if group:
            member = member_type(component, group)
            if member is None or not group_option:
                return None
            return suggestion(group_option.split(".")[0], f"{class_path}'s {group}", accepted(member), help_command)
        return suggestion(str(option), class_path, accepted(component), help_command)
    found = IN_GROUP.search(message)
    if found and found.group(1) in groups:
        return suggestion(found.group(2), found.group(1), accepted(groups[found.group(1)]), "see `mer fit --help`")
    found = UNRECOGNIZED.search(message)
    if found:
        return suggestion(f"--{found.group(1)}", "this command", options, "see --help", kind="option")
    found = AT_TOP.search(message)
    if found:
        top = sorted({option.removeprefix("--").split(".")[0] for option in options})
        return suggestion(found.group(1).split(".")[0], "the config", top, "see `mer fit --help`")
    return None
