"""``mer prepare``: check a release on disk, then face + flow preprocessing into the cache.

    mer prepare casme2 --root ~/data/CASME2/Cropped --annotations CASME2-coding-20140508.xlsx --protocol 5class
    mer prepare --config configs/medn/casme3.yaml            # exactly the cache that training reads
    mer prepare ... --check-only                             # the report only
    mer prepare ... --preview                                # a contact sheet of a few clips, no cache

The release report (missing clips, frames outside a clip) comes first; preparation is parallel,
shows a progress bar, resumes after a kill and writes the cache atomically with a manifest.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from jsonargparse import ArgumentError, ArgumentParser

from datamodules.annotations import DATASETS
from datamodules.databases.composite import CompositeReleaseDataModule
from datamodules.databases.datamodule import ReleaseDataModule, spread_over_classes
from datamodules.databases.per_database import DATAMODULES
from datamodules.databases.prepare import ReleaseClipPreparer
from datamodules.face import contact_sheet

from .cli import one_line
from datamodules.errors import MERError

# option name -> ReleaseDataModule argument
OPTIONS = {
    "root": "root", "protocol": "protocol", "annotations": "annotations", "release": "release",
    "frame_pattern": "frame_pattern", "num_frames": "num_frames", "interval": "interval", "size": "image_size",
    "per_frame_alignment": "per_frame_alignment", "landmarks": "landmarks", "on_error": "on_error",
    "cache_dir": "cache_dir", "workers": "prepare_workers",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mer prepare", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("dataset", nargs="?", choices=DATASETS, help="database (or take it from --config)")
    parser.add_argument("--config", type=Path, help="a training config: prepare what its data section describes")
    parser.add_argument("--root", help="release folder on disk (see README 'Frame layouts')")
    parser.add_argument("--annotations", nargs="+", help="annotation sheet(s) as distributed with the release")
    parser.add_argument("--protocol", help="class protocol, e.g. cde, 3class, 5class (mer dataset-info lists them)")
    parser.add_argument("--release", help="named frame layout of the database, e.g. CASME II 'cropped' or 'raw'")
    parser.add_argument("--frame-pattern", help="frame path pattern relative to --root, e.g. '{subject}/{clip}/img{frame}.jpg'")
    parser.add_argument("--num-frames", type=int, help="frames sampled per clip (default 8)")
    parser.add_argument("--interval", choices=("offset", "apex"), help="sample onset→offset (default) or onset→apex")
    parser.add_argument("--size", type=int, help="face crop side in pixels (default 144)")
    parser.add_argument("--per-frame-alignment", action="store_true", default=None, help="align every frame (default: the onset frame's transform for the whole clip)")
    parser.add_argument("--landmarks", choices=("dlib", "face_alignment"), help="landmark backend (default dlib, offline)")
    parser.add_argument("--on-error", choices=("skip", "fail"), help="clips with missing frames or no face: skip and list them (default) or fail")
    parser.add_argument("--cache-dir", help="cache folder (default $MER_CACHE_DIR or ~/.cache/mer-suite)")
    parser.add_argument("--workers", type=int, help="parallel processes (default: one per CPU core)")
    parser.add_argument("--check-only", action="store_true", help="print the release report and stop")
    parser.add_argument("--preview", nargs="?", type=int, const=8, metavar="N", help="prepare N clips (default 8, spread over classes) into a contact sheet PNG, no cache")
    parser.add_argument("--preview-file", type=Path, help="where --preview writes its PNG (default mer-preview-<dataset>.png)")
    return parser.parse_args(argv)


def datamodule_from(args: argparse.Namespace) -> ReleaseDataModule | CompositeReleaseDataModule:
    """The DataModule of --config's data section (if any) with the command-line options on top,
    parsed and instantiated by jsonargparse exactly as LightningCLI does it for training."""
    data: dict[str, Any] = {}
    if args.config:
        if not args.config.is_file():
            raise MERError(f"config not found: {args.config}")
        data = (yaml.safe_load(args.config.read_text()) or {}).get("data") or {}
    elif args.dataset is None:
        raise MERError("name a dataset (one of " + ", ".join(DATASETS) + ") or give --config")
    class_path = data.get("class_path")
    if args.dataset:
        named = f"{DATAMODULES[args.dataset].__module__}.{DATAMODULES[args.dataset].__name__}"
        if class_path and class_path.rsplit(".", 1)[-1] != DATAMODULES[args.dataset].__name__:
            raise MERError(f"dataset '{args.dataset}' contradicts {args.config}'s data.class_path {class_path}")
        class_path = named
    overrides = {target: getattr(args, option) for option, target in OPTIONS.items() if getattr(args, option) is not None}
    init_args = dict(data.get("init_args") or {})
    if "sources" in init_args:  # a composite: the options apply to each of its releases
        init_args["sources"] = [{**source, "init_args": {**source.get("init_args", {}), **overrides}} for source in init_args["sources"]]
    else:
        init_args.update(overrides)
        if "root" not in init_args:
            raise MERError("mer prepare needs --root (or a --config whose data section sets it)")
    base = CompositeReleaseDataModule if "sources" in init_args else ReleaseDataModule
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, "data", required=True)
    try:
        config = parser.parse_object({"data": {"class_path": class_path, "init_args": init_args}})
    except ArgumentError as err:
        raise MERError(f"{args.config or 'mer prepare'}: {one_line(err)}") from err
    return parser.instantiate(config).data


def preview(datamodule: ReleaseDataModule, n_clips: int, path: Path) -> Path:
    """Prepare `n_clips` clips (round-robin over classes) into a contact sheet, without any cache."""
    sources = datamodule.release_report.sources
    chosen = [sources[i] for i in spread_over_classes([s.row["label"] for s in sources], n_clips)]
    prepare = ReleaseClipPreparer(datamodule.settings)
    rows = []
    for source in chosen:
        try:
            row, arrays = prepare(source)
        except MERError as err:
            print(f"preview: skipped {err}")
            continue
        title = f"{source.sample_id} ({row['label_name']}, apex at sampled frame {row['apex_pos']})"
        rows.append((title, arrays["frames"].transpose(0, 2, 3, 1), arrays["flow"].astype(np.float32)))
    if not rows:
        raise MERError("no clip could be prepared for the preview; see the messages above")
    return contact_sheet(rows, path)


def prepare_main(argv: list[str]) -> None:
    args = parse_args(argv)
    datamodule = datamodule_from(args)
    for release in datamodule.sources if isinstance(datamodule, CompositeReleaseDataModule) else [datamodule]:
        prepare_release(release, args)


def prepare_release(datamodule: ReleaseDataModule, args: argparse.Namespace) -> None:
    """Report, then preview or prepare one release."""
    annotations = datamodule.annotations
    print(f"{datamodule.dataset} / {datamodule.protocol}: {len(annotations.samples)} annotated samples, "
          f"{len(annotations.issues)} sheet issue(s) (see `mer dataset-info`)")
    print("\n".join(datamodule.release_report.lines()))
    if args.check_only:
        return
    if args.preview is not None:
        path = preview(datamodule, args.preview, args.preview_file or Path(f"mer-preview-{datamodule.dataset}.png"))
        print(f"preview written: {path}")
        return
    start = time.perf_counter()
    cache = datamodule.cache
    meta = cache.meta
    print(f"prepared {meta['n_samples']} clips ({meta.get('n_skipped', 0)} skipped) in {time.perf_counter() - start:.0f} s")
    print(f"cache: {cache.directory} (manifest.json lists settings and every clip left out; preview.png shows a few)")
