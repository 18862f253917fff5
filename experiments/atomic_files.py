"""Result files: written atomically (a reader, or a killed run, never sees half a file), and read back
with one line naming a damaged file and what to do (:func:`read_json`, :func:`read_yaml`)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from datamodules.errors import MERError

if TYPE_CHECKING:
    import pandas as pd

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def replaced_atomically(path: Path, suffix: str = "") -> Iterator[Path]:
    """A fresh temporary path beside `path` (unique per writer, so processes writing the same file never
    mix their bytes) that replaces `path` once the block has written it: flushed to disk first, then
    renamed over `path`, then the directory entry flushed, so that a kill (or a power loss) leaves the
    old file or the new one, whole. The temporary file is removed if the block fails or is interrupted."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    tmp = Path(name)
    try:
        os.close(handle)
        tmp.chmod(0o666 & ~_UMASK)  # mkstemp makes it private; results keep the permissions of a plain write
        yield tmp
        flush_to_disk(tmp)
        os.replace(tmp, path)
        flush_to_disk(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def flush_to_disk(path: Path) -> None:
    """fsync a file, or a directory (its entries: a rename); a file system that cannot sync a directory is
    left as it is."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        os.fsync(handle)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(handle)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a killed run never leaves half a file."""
    with replaced_atomically(path) as tmp:
        tmp.write_text(text)


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def damaged(path: Path, reason: BaseException | str, remedy: str) -> MERError:
    """The one-line error of a file we wrote that cannot be read back: which file, why, what to do."""
    if isinstance(reason, yaml.MarkedYAMLError) and reason.problem_mark is not None:
        reason = f"YAML: {reason.problem} at line {reason.problem_mark.line + 1}"
    elif isinstance(reason, BaseException):
        reason = f"{type(reason).__name__}: {reason}"
    return MERError(f"{path} is damaged ({' '.join(reason.split())}); {remedy}")


def read_json(path: Path, remedy: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object in `path`, holding at least `keys`; else :func:`damaged` with `remedy`."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # a decoding error (bad JSON, bad UTF-8) is a ValueError
        raise damaged(path, err, remedy) from None
    return _mapping(data, path, remedy, keys, "JSON")


def read_yaml(path: Path, remedy: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The YAML mapping in `path`, holding at least `keys`; else :func:`damaged` with `remedy`."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise damaged(path, err, remedy) from None
    return _mapping(data, path, remedy, keys, "YAML")


def _mapping(data: Any, path: Path, remedy: str, keys: tuple[str, ...], language: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise damaged(path, f"not a {language} mapping but {type(data).__name__}", remedy)
    missing = [key for key in keys if key not in data]
    if missing:
        raise damaged(path, f"no {', '.join(missing)}", remedy)
    return data
