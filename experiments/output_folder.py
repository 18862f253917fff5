"""Output folders of our commands (``--output``): one that cannot be made or written is refused in one
line, before anything is computed, and an OS error while a command claims it is worded the same way."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from datamodules.errors import MERError


def check_output_folder(path: Path, option: str = "--output") -> None:
    """Refuse `path` if it, or the nearest of its parents that exists, is not a folder this process can create
    entries in: tried with a temporary folder, removed at once (permissions are no test for root, and a read-only
    or virtual file system refuses root too)."""
    _check_folder(Path(path), path, option)


def check_output_file(path: Path, option: str = "--output") -> None:
    """Refuse the output file `path` if it is a folder or its folder cannot be made or written (nothing is created)."""
    if Path(path).is_dir():
        raise MERError(f"{option} {path} is a folder; give the path of a file (in it or elsewhere)")
    _check_folder(Path(path).parent, path, option)


def _check_folder(folder: Path, path: Path, option: str) -> None:
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise MERError(f"{option} {path}: {existing} is a file, not a folder; give another {option}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mer-write-test-", dir=existing))
    except OSError as err:
        raise MERError(f"{option} {path}: cannot create anything in {existing}: {err.strerror or err}; give another "
                       f"{option} or change its permissions") from None


@contextlib.contextmanager
def writing_into(path: Path, option: str = "--output") -> Iterator[None]:
    """Around the first writes into an output folder: an OS error (permissions, a read-only or full disk, a
    path the system refuses) becomes one line naming the file and the system's reason."""
    try:
        yield
    except OSError as err:
        where = err.filename or path
        raise MERError(f"{option} {path}: cannot write {where}: {err.strerror or err}; give another {option}") from None
