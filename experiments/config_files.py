"""How the suite reads config files: YAML with OmegaConf interpolation, and composition from a base file.

Interpolation: a value may name another one, ``image_size: ${model.init_args.image_size}`` (a key path
from the file's top). The suite's LightningCLI parses in jsonargparse's ``omegaconf+`` mode, so
interpolations are resolved over the whole parsed config, command-line overrides included
(``--model.init_args.image_size 96`` moves both), before anything is built or saved: a run's
config.yaml holds plain values only. The loader rewrites a file's key paths relative to where they
stand (``${...model.init_args.image_size}``), so they resolve the same under a subcommand (``mer fit``
nests the file's keys under ``fit``).

Composition: a file whose top-level ``extends:`` names another config file (relative to its own folder)
holds only what differs from that base; the two are merged key by key (mappings recursively, any
other value replaced), e.g. ``configs/lfd_tcmen/casme3_4class.yaml`` is ``casme3_3class.yaml`` with
another protocol. A base may extend another base.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import get_loader, set_loader
from omegaconf import OmegaConf

from datamodules.errors import MERError

PARSER_MODE = "omegaconf+"
EXTENDS = "extends"
TOP_KEY_PATH = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")  # ${model.init_args.image_size}, not ${.x} nor ${oc.env:X}
MAX_DEPTH = 8  # bases of bases, at most (a longer chain is a cycle)


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` on top: mappings merged recursively, any other value replaced."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        both_mappings = isinstance(result.get(key), dict) and isinstance(value, dict)
        result[key] = merged(result[key], value) if both_mappings else copy.deepcopy(value)
    return result


def composed(value: Any, path: Path, depth: int = 0) -> Any:
    """The mapping `value` read from `path` merged over the file its ``extends:`` names (recursively)."""
    if not isinstance(value, dict) or EXTENDS not in value:
        return value
    base_path = path.parent / str(value[EXTENDS])
    if depth >= MAX_DEPTH:
        raise MERError(f"{path}: more than {MAX_DEPTH} nested '{EXTENDS}:' files (do they extend each other?)")
    if not base_path.is_file():
        raise MERError(f"{path}: '{EXTENDS}: {value[EXTENDS]}' is not a file next to it ({base_path})")
    base = composed(yaml.safe_load(base_path.read_text()), base_path, depth + 1)
    if not isinstance(base, dict):
        raise MERError(f"{base_path} (extended by {path}) is not a YAML mapping")
    return merged(base, {key: item for key, item in value.items() if key != EXTENDS})


def relative_interpolations(value: Any, container: tuple[str, ...] = ()) -> Any:
    """`value` (a file's mapping, its key path `container`) with every ``${a.b}`` from the file's top rewritten
    relative to the mapping or list that holds it (``${...a.b}`` two levels down)."""
    if isinstance(value, dict):
        return {key: relative_interpolations(item, (*container, str(key))) for key, item in value.items()}
    if isinstance(value, list):
        return [relative_interpolations(item, (*container, str(i))) for i, item in enumerate(value)]
    if isinstance(value, str):
        dots = "." * len(container)  # from the holding node up to the top: one dot per level, plus its own
        return TOP_KEY_PATH.sub(lambda match: f"${{{dots}{match.group(1)}}}", value)
    return value


def load_value(text: str, path: str | Path = "") -> Any:
    """jsonargparse's loader in :data:`PARSER_MODE`: its YAML loader, then for a config file :func:`composed`
    and :func:`relative_interpolations`."""
    value = get_loader("yaml")(text)
    return relative_interpolations(composed(value, Path(str(path)).absolute())) if path else value


def read_config(path: Path) -> dict[str, Any]:
    """A config file as the suite's LightningCLI reads it before type checks: composed, interpolations resolved."""
    value = composed(yaml.safe_load(Path(path).read_text()), Path(path).absolute())
    if not isinstance(value, dict):
        raise MERError(f"{path} is not a YAML mapping")
    return OmegaConf.to_container(OmegaConf.create(value), resolve=True)


set_loader(PARSER_MODE, load_value, exceptions=(yaml.YAMLError,))
