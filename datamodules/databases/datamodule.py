"""LOSO DataModules over the official releases of the real databases, prepared once into a cache.

`ReleaseDataModule` reads the annotation sheet with the database's adapter, checks the release
on disk, and prepares every usable clip (face, alignment, T frames, TV-L1 flow, apex image) into
a ClipCache keyed by the samples and every preparation setting. ``mer prepare`` builds the same
cache ahead of training. One thin subclass per database fixes its name and defaults.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from importlib import metadata
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from datamodules.errors import MERError

from ..annotations import DATASETS, Annotations, load_annotations
from ..cache import ClipCache, build_cache, default_cache_dir, settings_key
from ..datasets import PreparedClipDataset
from ..face import AlignmentSettings, contact_sheet
from ..loso import LOSODataModule
from ..preprocessing import FLOW_BACKENDS, FlowBackend, TVL1Settings
from .layouts import VIDEO_FOLDERS, FrameLayout, release_pattern
from .prepare import AU_COLUMN, PrepareSettings, ReleaseClipPreparer
from .release_check import ReleaseReport, check_release

CACHE_FORMAT = 1  # bump when the layout of prepared clips changes


class ReleaseDataModule(LOSODataModule):
    """One database release on disk -> prepared clips -> leave-one-subject-out folds.

    The fold and loader options (fold, test_subject, k_folds, val_subjects, batch_size, num_workers,
    split_seed) are LOSODataModule's.

    Args:
        dataset: one of casme2, samm, smic, casme3, dfme, mmew.
        root: the release folder (docs/data.md, "Frame layouts", says which folder per database).
        protocol: class protocol (e.g. 'cde', '3class', '5class'); see `mer dataset-info`.
        annotations: the annotation sheet(s) as distributed with the release.
        release: named frame layout of the database (e.g. CASME II 'cropped' or 'raw').
        frame_pattern: explicit frame path pattern relative to `root` (overrides `release`).
        num_frames: frames sampled per clip. This and the next six are PrepareSettings' preparation
            settings, each part of the cache key.
        interval: 'offset' (onset→offset) or 'apex' (onset→apex) sampling.
        image_size: side of the aligned face crop.
        per_frame_alignment: align every frame instead of reusing the onset's transform.
        landmarks: landmark backend ('dlib' or the optional 'face_alignment').
        tvl1: TV-L1 settings.
        apex_image_size: side of the onset→apex u/v/strain image.
        flow: TV-L1 implementation: 'opencv' (cv2 DualTVL1, default) or 'torch' (the batched PyTorch
            port, datamodules/face/tvl1_torch.py; on the GPU when there is one). Part of the cache
            key when 'torch' (`mer prepare --flow torch`).
        fold_side: fold AU side prefixes (L4, R12) into one AU label.
        fold_intensity: fold AU intensity suffixes (15A) into one AU label.
        on_error: 'skip' clips with missing frames or no face (listed in the manifest) or 'fail'.
        cache_dir: where prepared clips are cached (default $MER_CACHE_DIR or ~/.cache/mer-suite).
        prepare_workers: processes preparing clips (default: one per CPU core).
        with_frames: also load RGB frames (needed by the LED motion branch).
        composite_apex: feed the onset→apex u/v/strain image (apex_image_size², 0-255) as the
            model's 'apex_flow' (STSTNet on the composite protocol) instead of the sequence's apex flow.
    """

    def __init__(
        self,
        dataset: str,
        root: str,
        protocol: str,
        annotations: str | list[str],
        release: str | None = None,
        frame_pattern: str | None = None,
        num_frames: int = 8,
        interval: Literal["offset", "apex"] = "offset",
        image_size: int = 144,
        per_frame_alignment: bool = False,
        landmarks: Literal["dlib", "face_alignment"] = "dlib",
        tvl1: TVL1Settings = TVL1Settings(),
        flow: FlowBackend = "opencv",
        apex_image_size: int = 28,
        fold_side: bool = True,
        fold_intensity: bool = True,
        on_error: Literal["skip", "fail"] = "skip",
        cache_dir: str | None = None,
        prepare_workers: int | None = None,
        with_frames: bool = True,
        composite_apex: bool = False,
        fold: int = 0,
        test_subject: str | None = None,
        k_folds: int | None = None,
        val_subjects: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        split_seed: int = 0,
    ) -> None:
        super().__init__(fold=fold, test_subject=test_subject, k_folds=k_folds, val_subjects=val_subjects,
                         batch_size=batch_size, num_workers=num_workers, split_seed=split_seed)
        if dataset not in DATASETS:
            raise MERError(f"unknown dataset '{dataset}'; choose one of {list(DATASETS)}")
        self.dataset = dataset
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise MERError(f"release root not found: {self.root}; set root to the {dataset} folder (docs/data.md, 'Frame layouts', names it per database)")
        if flow not in FLOW_BACKENDS:
            raise MERError(f"unknown flow backend '{flow}'; choose one of {list(FLOW_BACKENDS)}")
        self.protocol = protocol
        self.sheets = [resolve_sheet(s, self.root) for s in ([annotations] if isinstance(annotations, str) else annotations)]
        self.layout = FrameLayout(self.root, release_pattern(dataset, release, frame_pattern), dataset not in VIDEO_FOLDERS)
        self.settings = PrepareSettings(
            num_frames=num_frames, interval=interval, landmarks=landmarks, tvl1=tvl1, apex_image_size=apex_image_size,
            flow_backend=flow, alignment=AlignmentSettings(size=image_size, per_frame=per_frame_alignment),
        )
        self.fold_side, self.fold_intensity = fold_side, fold_intensity
        self.on_error = on_error
        self.cache_dir = cache_dir or default_cache_dir()
        self.prepare_workers = prepare_workers or os.cpu_count() or 1
        self.with_frames = with_frames
        self.composite_apex = composite_apex

    # -- annotations and release ---------------------------------------------------------------
    @cached_property
    def annotations(self) -> Annotations:
        return load_annotations(self.dataset, self.sheets, self.protocol, fold_side=self.fold_side, fold_intensity=self.fold_intensity)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.annotations.class_names

    @property
    def num_aus(self) -> int:
        return len(self.annotations.au_vocabulary)

    @cached_property
    def samples(self) -> pd.DataFrame:
        """The adapter's samples with their AU multi-hot rows attached."""
        samples = self.annotations.samples.copy()
        samples[AU_COLUMN] = [row.tolist() for row in self.annotations.au_matrix()]
        return samples

    @cached_property
    def release_report(self) -> ReleaseReport:
        return check_release(self.samples, self.layout, self.settings.num_frames, self.settings.interval)

    # -- cache ---------------------------------------------------------------------------------
    def cache_settings(self) -> dict[str, Any]:
        """Everything that determines the prepared arrays (the cache key)."""
        samples = self.samples.drop(columns=["sheet", "sheet_row"], errors="ignore")
        return {
            "source": self.dataset,
            "format": CACHE_FORMAT,
            "root": str(self.root.resolve()),
            "pattern": self.layout.pattern,
            "protocol": self.protocol,
            "samples": settings_key({"csv": samples.to_csv(index=False)}),
            "prepare": self.settings.as_dict(),
        }

    @property
    def cache_location(self) -> Path:
        return ClipCache.location(self.cache_dir, f"{self.dataset}-{self.protocol}", self.cache_settings())

    def check_inputs(self) -> None:
        """A prepared cache: its array headers. Otherwise the release check (directory listings and
        file sizes, no decoding): under on_error 'fail' every unusable clip, under 'skip' only when no
        clip is usable (the others are left out and listed in the manifest)."""
        if ClipCache.is_complete(self.cache_location):
            ClipCache(self.cache_location).check()
            return
        report = self.release_report
        if report.problems and self.on_error == "fail":
            raise MERError(f"{len(report.problems)} {self.dataset} clip(s) cannot be read: {'; '.join(report.problems)} "
                           "(or set on_error 'skip' to leave them out)")
        if not report.sources:
            raise MERError(f"no usable clip under {self.root}: {report.problems[0] if report.problems else 'no samples'}")

    @cached_property
    def cache(self) -> ClipCache:
        directory = self.cache_location
        if ClipCache.is_complete(directory):
            return ClipCache(directory)
        self.check_inputs()
        return build_cache(
            directory, self.cache_settings(), self.release_report.sources, ReleaseClipPreparer(self.settings),
            self.prepare_workers, desc=f"{self.dataset}: face + TV-L1", on_error=self.on_error,
            extra_files=self.write_extra_files,
        )

    def write_extra_files(self, directory: Path) -> None:
        self.write_manifest(directory)
        write_cache_preview(directory, directory / "preview.png")

    def write_manifest(self, directory: Path) -> None:
        """manifest.json: what was prepared from where, with which settings and software, and what was left out."""
        skipped = pd.read_csv(directory / "skipped.csv")["reason"].tolist()
        manifest = {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "root": str(self.root.resolve()),
            "pattern": self.layout.pattern,
            "annotations": [str(Path(s).resolve()) for s in self.sheets],
            "settings": self.settings.as_dict(),
            "software": {name: _version(name) for name in ("mer-suite", "opencv-contrib-python-headless", "dlib-bin", "numpy")},
            "n_annotated": len(self.annotations.samples),
            "n_prepared": json.loads((directory / "meta.json").read_text())["n_samples"],
            "not_prepared": self.release_report.problems + skipped,
            "annotation_issues": [str(issue) for issue in self.annotations.issues],
        }
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")

    def prepare_data(self) -> None:
        self.cache  # builds it once (rank 0 under DDP)

    # -- LOSO ----------------------------------------------------------------------------------
    def load_table(self) -> pd.DataFrame:
        return self.cache.index.copy()

    def make_dataset(self, rows: np.ndarray) -> Dataset:
        return PreparedClipDataset(self.cache, rows, self.table["label"].to_numpy(), self.with_frames, self.composite_apex)


def spread_over_classes(labels: Sequence[int], n: int) -> list[int]:
    """Positions of up to `n` items taken round-robin over the classes (first items of each class first)."""
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(position)
    order = [group[i] for i in range(max(map(len, by_class.values()), default=0)) for group in by_class.values() if i < len(group)]
    return order[:n]


def write_cache_preview(directory: Path, path: Path, n_clips: int = 8) -> Path:
    """Contact sheet of a few prepared clips of the cache in `directory` (what the model will see)."""
    index = pd.read_csv(directory / "index.csv", dtype={"sample_id": str})
    frames = np.load(directory / "frames.npy", mmap_mode="r")
    flow = np.load(directory / "flow.npy", mmap_mode="r")
    rows = [
        (f"{index.at[i, 'sample_id']} ({index.at[i, 'label_name']})", np.asarray(frames[i]).transpose(0, 2, 3, 1), np.asarray(flow[i], dtype=np.float32))
        for i in spread_over_classes(index["label"].tolist(), n_clips)
    ]
    return contact_sheet(rows, path)


def resolve_sheet(sheet: str, root: Path) -> Path:
    """An annotation sheet as given, else inside the release root or its parent folder."""
    candidates = [Path(sheet).expanduser()]
    if not candidates[0].is_absolute():
        candidates += [root / sheet, root.parent / sheet]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MERError(f"annotation sheet '{sheet}' not found (looked in {', '.join(str(c.parent) for c in candidates)}); pass annotations=<path to the sheet>")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"
