"""Prepared-clip cache: memory-mappable arrays plus an index table, keyed by settings.

Layout of a cache directory ``<root>/<name>-<key>/``::

    meta.json        settings, key, array shapes (written last: its presence means complete)
    index.csv        one row per clip (sample_id, subject, dataset, labels, AUs, onset/apex/offset...)
    <array>.npy      one memory-mappable array per modality, first axis = row of index.csv

The key is a hash of every generator and preprocessing setting, so changed settings never reuse
a stale cache. Clips are prepared in parallel processes into ``<dir>.partial/clips/`` (one
atomically written file per clip, so a killed run resumes where it stopped), then assembled
and moved into place with one atomic rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from experiments.errors import MERError

PreparedClip = tuple[dict[str, Any], dict[str, np.ndarray]]
"""What preparing one clip yields: its index row and its arrays (name -> array)."""


def settings_key(settings: dict[str, Any]) -> str:
    """Short stable hash of a JSON-serialisable settings dict."""
    canonical = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class ClipCache:
    """Read access to one complete cache directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.meta = json.loads((self.directory / "meta.json").read_text())
        self.index = pd.read_csv(self.directory / "index.csv", dtype={"subject": str, "sample_id": str})
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str) -> np.ndarray:
        """Memory-mapped array `name` (opened once per process)."""
        if name not in self._arrays:
            self._arrays[name] = np.load(self.directory / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    def __getstate__(self) -> dict[str, Any]:  # memmaps are reopened in dataloader workers
        return {**self.__dict__, "_arrays": {}}

    @staticmethod
    def location(root: Path, name: str, settings: dict[str, Any]) -> Path:
        return Path(root).expanduser() / f"{name}-{settings_key(settings)}"

    @staticmethod
    def is_complete(directory: Path) -> bool:
        return (Path(directory) / "meta.json").is_file()


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _save_clip(path: Path, prepared: PreparedClip) -> None:
    row, arrays = prepared
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, __row__=np.array(json.dumps(row)), **arrays)
    os.replace(tmp, path)


def build_cache(
    directory: Path,
    settings: dict[str, Any],
    items: Sequence[Any],
    prepare_one: Callable[[Any], PreparedClip],
    workers: int = 2,
    desc: str = "preparing clips",
) -> ClipCache:
    """Prepare every item with `prepare_one` (a picklable top-level function) and assemble a cache.

    Already prepared clips of an interrupted run are reused; the final directory appears
    atomically and only when complete.
    """
    directory = Path(directory)
    if ClipCache.is_complete(directory):
        return ClipCache(directory)
    partial = directory.with_name(directory.name + ".partial")
    clip_dir = partial / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    paths = [clip_dir / f"{i:06d}.npz" for i in range(len(items))]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    with tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, unit="clip") as bar:
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
                for i, prepared in zip(todo, pool.map(prepare_one, [items[i] for i in todo])):
                    _save_clip(paths[i], prepared)
                    bar.update()
        else:
            for i in todo:
                _save_clip(paths[i], prepare_one(items[i]))
                bar.update()
    _assemble(partial, paths, settings)
    shutil.rmtree(clip_dir)
    try:
        os.replace(partial, directory)
    except OSError as err:  # another process finished the same cache first
        if not ClipCache.is_complete(directory):
            raise MERError(f"cannot move prepared cache into {directory}: {err}") from err
        shutil.rmtree(partial, ignore_errors=True)
    return ClipCache(directory)


def _assemble(partial: Path, paths: list[Path], settings: dict[str, Any]) -> None:
    rows = []
    writers: dict[str, np.ndarray] = {}
    for i, path in enumerate(paths):
        with np.load(path) as clip:
            rows.append(json.loads(str(clip["__row__"])))
            for name in clip.files:
                if name == "__row__":
                    continue
                if name not in writers:
                    writers[name] = np.lib.format.open_memmap(
                        partial / f"{name}.npy", mode="w+", dtype=clip[name].dtype, shape=(len(paths), *clip[name].shape)
                    )
                writers[name][i] = clip[name]
    for array in writers.values():
        array.flush()
    pd.DataFrame(rows).to_csv(partial / "index.csv", index=False)
    meta = {
        "settings": settings,
        "key": settings_key(settings),
        "n_samples": len(rows),
        "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in writers.items()},
    }
    (partial / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
