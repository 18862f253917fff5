"""``mer dataset-info``: what an annotation sheet yields under a protocol, without any frames."""

from __future__ import annotations

import json
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from datamodules.annotations import DATASETS, PROTOCOLS, Annotations, load_annotations


def build_parser() -> ArgumentParser:
    protocols = "; ".join(f"{name}: {', '.join(PROTOCOLS[name])}" for name in DATASETS)
    parser = ArgumentParser(
        prog="mer dataset-info", exit_on_error=False,
        description="Samples, subjects, class counts, excluded emotions and sheet warnings of a database's "
                    "annotation sheet(s) under a protocol. Needs no frames.",
        epilog=f"protocols per dataset: {protocols}")
    parser.add_argument("dataset", help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--annotations", nargs="+", required=True, metavar="SHEET",
                        help="annotation sheet(s), xlsx or csv, as the release ships them (DFME: several)")
    parser.add_argument("--protocol", required=True, help="class protocol, e.g. cde, 5class, 7class")
    for flag, text in (("--json", "print the summary as JSON"),
                       ("--no-fold-side", "keep L/R/T/B/A AU locations apart (L12 != 12)"),
                       ("--no-fold-intensity", "keep AU intensities A-E apart (12A != 12)")):
        parser.add_argument(flag, type=bool, nargs="?", const=True, default=False, help=text)
    return parser


def main(argv: list[str]) -> None:
    """`mer dataset-info` on `argv`."""
    run(build_parser().parse_args(argv))


def run(args: Namespace) -> None:
    annotations = load_annotations(args.dataset, args.annotations, args.protocol,
                                   fold_side=not args.no_fold_side, fold_intensity=not args.no_fold_intensity)
    if args.json:
        print(json.dumps(annotations.summary(), indent=2))
    else:
        print(describe(annotations, [Path(sheet).name for sheet in args.annotations]))


def describe(annotations: Annotations, sheets: list[str]) -> str:
    """The summary as readable lines."""
    summary = annotations.summary()
    lines = [
        f"{annotations.dataset}, protocol {annotations.protocol} ({', '.join(annotations.class_names)})",
        f"sheets:   {', '.join(sheets)}",
        f"samples:  {summary['n_samples']} from {summary['n_subjects']} subjects",
        f"classes:  {_counts(summary['class_counts'])}",
        f"excluded: {_counts(summary['excluded']) or 'none'}",
        f"AUs:      {len(annotations.au_vocabulary)} ({', '.join(annotations.au_vocabulary) or 'none annotated'})",
    ]
    for kind in ("warnings", "unusable"):
        lines.append(f"{kind}: {len(summary[kind])}")
        lines += [f"  {line}" for line in summary[kind]]
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())
