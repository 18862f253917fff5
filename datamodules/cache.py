"""Prepared-clip cache: memory-mappable arrays plus an index table, keyed by settings.

Layout of a cache directory ``<root>/<name>-<key>/``::

    meta.json        settings, key, array shapes (written last: its presence means complete)
    index.csv        one row per clip (sample_id, subject, dataset, labels, AUs, onset/apex/offset...)
    <array>.npy      one memory-mappable array per modality, first axis = row of index.csv

The key is a hash of every generator and preprocessing setting, so changed settings never reuse
a stale cache. Clips are prepared in parallel processes into ``<dir>.partial/clips/`` (one
atomically written file per clip, so a killed run resumes where it stopped), then assembled
and moved into place with one atomic rename. One process at a time builds a given directory: a
file lock ``<dir>.lock`` beside it (flock, so the OS frees it when a holder is killed) makes the
others wait, then reuse the finished cache (many SLURM array tasks starting at once). A clip whose preparation raises a MERError (no face,
a corrupt frame) either stops the build (``on_error='fail'``; clips done so far are kept) or is
recorded in ``skipped.csv`` with its reason and left out (``on_error='skip'``).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from datamodules.errors import MERError

PreparedClip = tuple[dict[str, Any], dict[str, np.ndarray]]
"""What preparing one clip yields: its index row and its arrays (name -> array)."""


def default_cache_dir() -> str:
    """$MER_CACHE_DIR, else ~/.cache/mer-suite."""
    return os.environ.get("MER_CACHE_DIR", "~/.cache/mer-suite")


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

    def problems(self) -> list[str]:
        """What is damaged in this cache (array files missing, truncated or of another shape than
        meta.json records, index rows missing); reads array headers only."""
        found = []
        if len(self.index) != self.meta["n_samples"]:
            found.append(f"index.csv has {len(self.index)} rows, meta.json says {self.meta['n_samples']}")
        for name, spec in self.meta["arrays"].items():
            path = self.directory / f"{name}.npy"
            try:
                array = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                found.append(f"{path.name} missing")
                continue
            except (ValueError, OSError) as err:  # a truncated file cannot be mapped
                found.append(f"{path.name} unreadable ({err})")
                continue
            if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
                found.append(f"{path.name} is {array.dtype}{list(array.shape)}, meta.json says {spec['dtype']}{spec['shape']}")
        return found

    def check(self) -> None:
        """Raise one MERError naming every damaged file of this cache and how to rebuild it."""
        problems = self.problems()
        if problems:
            raise MERError(f"prepared cache {self.directory} is damaged: {'; '.join(problems)}; delete that folder to prepare it again")


def _init_worker() -> None:
    """One thread per worker process (the pool spreads the cores): OpenCV's and torch's flow alike."""
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _save_clip(path: Path, prepared: PreparedClip | str) -> None:
    """One clip's file: its row and arrays, or only the reason it was skipped."""
    tmp = path.with_suffix(".tmp.npz")
    if isinstance(prepared, str):
        np.savez(tmp, __skipped__=np.array(prepared))
    else:
        row, arrays = prepared
        np.savez(tmp, __row__=np.array(json.dumps(row, default=str)), **arrays)
    os.replace(tmp, path)


class _Guarded:
    """`prepare_one` with user-facing failures (MERError) returned as their message."""

    def __init__(self, prepare_one: Callable[[Any], PreparedClip]) -> None:
        self.prepare_one = prepare_one

    def __call__(self, item: Any) -> PreparedClip | str:
        try:
            return self.prepare_one(item)
        except MERError as err:
            return str(err)


def build_cache(
    directory: Path,
    settings: dict[str, Any],
    items: Sequence[Any],
    prepare_one: Callable[[Any], PreparedClip],
    workers: int = 2,
    desc: str = "preparing clips",
    on_error: str = "fail",
    extra_files: Callable[[Path], None] | None = None,
) -> ClipCache:
    """Prepare every item with `prepare_one` (a picklable top-level function) and assemble a cache.

    Already prepared clips of an interrupted run are reused; the final directory appears
    atomically and only when complete. `extra_files(partial_dir)` may add files (a manifest,
    a preview) before the directory is moved into place.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(directory):
        if ClipCache.is_complete(directory):  # built by another process while this one waited
            return ClipCache(directory)
        _build(directory, settings, items, prepare_one, workers, desc, on_error, extra_files)
    return ClipCache(directory)


@contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    """Hold the lock on building `directory`; says so once when another process holds it first."""
    lock = FileLock(directory.with_name(directory.name + ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another process preparing {directory} ...", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _build(
    directory: Path,
    settings: dict[str, Any],
    items: Sequence[Any],
    prepare_one: Callable[[Any], PreparedClip],
    workers: int,
    desc: str,
    on_error: str,
    extra_files: Callable[[Path], None] | None,
) -> None:
    """build_cache's work, with the lock held."""
    partial = directory.with_name(directory.name + ".partial")
    clip_dir = partial / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    paths = [clip_dir / f"{i:06d}.npz" for i in range(len(items))]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    guarded = _Guarded(prepare_one)

    def keep(i: int, prepared: PreparedClip | str) -> None:
        if isinstance(prepared, str) and on_error != "skip":
            raise MERError(f"{prepared} (the {i} clips before it are kept; rerun to resume, or skip such clips with on_error 'skip')")
        _save_clip(paths[i], prepared)
        bar.update()

    with tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, unit="clip") as bar:
        if workers > 1 and len(todo) > 1:
            # spawn, not fork: a forked child inherits OpenCV's thread pool state and can deadlock
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker) as pool:
                for i, prepared in zip(todo, pool.map(guarded, [items[i] for i in todo])):
                    keep(i, prepared)
        else:
            for i in todo:
                keep(i, guarded(items[i]))
    _assemble(partial, paths, settings)
    if extra_files is not None:
        extra_files(partial)
    shutil.rmtree(clip_dir)
    os.replace(partial, directory)


def _is_prepared(path: Path) -> bool:
    with np.load(path) as clip:
        return "__row__" in clip.files


def _assemble(partial: Path, paths: list[Path], settings: dict[str, Any]) -> None:
    rows, skipped = [], []
    writers: dict[str, np.ndarray] = {}
    n_kept = sum(_is_prepared(p) for p in paths)
    for path in paths:
        with np.load(path) as clip:
            if "__skipped__" in clip.files:
                skipped.append({"item": int(path.stem), "reason": str(clip["__skipped__"])})
                continue
            i = len(rows)
            rows.append(json.loads(str(clip["__row__"])))
            for name in clip.files:
                if name == "__row__":
                    continue
                if name not in writers:
                    writers[name] = np.lib.format.open_memmap(
                        partial / f"{name}.npy", mode="w+", dtype=clip[name].dtype, shape=(n_kept, *clip[name].shape)
                    )
                writers[name][i] = clip[name]
    for array in writers.values():
        array.flush()
    if not rows:
        raise MERError(f"no clip could be prepared ({len(skipped)} skipped, e.g. {skipped[0]['reason'] if skipped else '-'})")
    pd.DataFrame(rows).to_csv(partial / "index.csv", index=False)
    pd.DataFrame(skipped, columns=["item", "reason"]).to_csv(partial / "skipped.csv", index=False)
    meta = {
        "settings": settings,
        "key": settings_key(settings),
        "n_samples": len(rows),
        "n_skipped": len(skipped),
        "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in writers.items()},
    }
    (partial / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
