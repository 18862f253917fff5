"""``mer prepare``: check a release on disk, then face + flow preprocessing into the cache.

    mer prepare casme2 --root ~/data/CASME2/Cropped --annotations CASME2-coding-20140508.xlsx --protocol 5class
    mer prepare --config configs/medn/casme3.yaml            # exactly the cache that training reads
    mer prepare ... --check-only                             # the report only
    mer prepare ... --preview                                # a contact sheet of a few clips, no cache

The release report (missing clips, frames outside a clip) comes first; preparation is parallel,
shows a progress bar, resumes after a kill and writes the cache atomically with a manifest.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from jsonargparse import ArgumentError, ArgumentParser, Namespace

from datamodules.annotations import DATASETS
from datamodules.databases.composite import CompositeReleaseDataModule
from datamodules.databases.datamodule import ReleaseDataModule, spread_over_classes
from datamodules.databases.per_database import DATAMODULES
from datamodules.databases.prepare import ReleaseClipPreparer
from datamodules.errors import MERError
from datamodules.face import contact_sheet
from datamodules.loso import LOSODataModule

from .config_files import read_config
from .exit_codes import one_line
from .signature_options import add_signature_options

# ReleaseDataModule arguments that are not options of `mer prepare`: the dataset (its positional
# argument), the settings group tvl1 (set it in --config: an option would replace the whole group) and
# what does not change the prepared clips (loading, the fold split)
NOT_OPTIONS = ("dataset", "tvl1", "with_frames", "composite_apex", *inspect.signature(LOSODataModule.__init__).parameters)
SHORT_NAMES = {"image_size": "size", "prepare_workers": "workers"}


def build_parser() -> ArgumentParser:
    """Options: the ReleaseDataModule's preparation arguments (each overrides --config's data section)."""
    parser = ArgumentParser(prog="mer prepare", exit_on_error=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Optional[Literal[DATASETS]], nargs="?", default=None,
                        help="database (or take it from --config)")
    parser.add_argument("--config", type=Optional[Path], default=None,
                        help="a training config: prepare what its data section describes")
    parser.add_argument("--check-only", type=bool, nargs="?", const=True, default=False,
                        help="print the release report and stop")
    parser.add_argument("--preview", type=Optional[int], nargs="?", const=8, default=None, metavar="N",
                        help="prepare N clips (default 8, spread over classes) into a contact sheet PNG, no cache")
    parser.add_argument("--preview-file", type=Optional[Path], default=None,
                        help="where --preview writes its PNG (default mer-preview-<dataset>.png)")
    add_signature_options(parser, ReleaseDataModule, skip=NOT_OPTIONS, aliases=SHORT_NAMES, overrides_only=True,
                          nested_key="data")
    return parser


def parse_args(argv: list[str]) -> Namespace:
    return build_parser().parse_args(argv)


def datamodule_from(args: Namespace) -> ReleaseDataModule | CompositeReleaseDataModule:
    """The DataModule of --config's data section (if any) with the command-line options on top,
    parsed and instantiated by jsonargparse exactly as LightningCLI does it for training."""
    data: dict[str, Any] = {}
    if args.config:
        if not args.config.is_file():
            raise MERError(f"config not found: {args.config}")
        data = read_config(args.config).get("data") or {}
    elif args.dataset is None:
        raise MERError("name a dataset (one of " + ", ".join(DATASETS) + ") or give --config")
    class_path = data.get("class_path")
    if args.dataset:
        named = f"{DATAMODULES[args.dataset].__module__}.{DATAMODULES[args.dataset].__name__}"
        if class_path and class_path.rsplit(".", 1)[-1] != DATAMODULES[args.dataset].__name__:
            raise MERError(f"dataset '{args.dataset}' contradicts {args.config}'s data.class_path {class_path}")
        class_path = named
    init_args = dict(data.get("init_args") or {})
    overrides = {name: value for name, value in args.data.as_dict().items() if value is not None}
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


def main(argv: list[str]) -> None:
    """`mer prepare` on `argv`."""
    run(parse_args(argv))


def run(args: Namespace) -> None:
    datamodule = datamodule_from(args)
    for release in datamodule.sources if isinstance(datamodule, CompositeReleaseDataModule) else [datamodule]:
        prepare_release(release, args)


def prepare_release(datamodule: ReleaseDataModule, args: Namespace) -> None:
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
