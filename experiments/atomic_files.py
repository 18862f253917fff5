"""Atomic writes of result files: a reader, or a killed run, never sees half a file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def replaced_atomically(path: Path, suffix: str = "") -> Iterator[Path]:
    """A fresh temporary path beside `path` (unique per writer, so processes writing the same file never
    mix their bytes) that replaces `path` once the block has written it; removed if the block fails."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_UMASK)  # mkstemp makes it private; results keep the permissions of a plain write
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a killed run never leaves half a file."""
    with replaced_atomically(path) as tmp:
        tmp.write_text(text)


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
