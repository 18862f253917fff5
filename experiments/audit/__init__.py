"""``mer audit``: honesty checks of a run directory, or pooled vs averaged scores of any predictions CSV.

``mer audit RUN_DIR`` prints one PASS/FAIL line per check (``experiments.audit.checks``), the pooled
scores beside the mean of per-subject and per-fold scores, writes RUN_DIR/audit.json and exits 1 when
a check failed. ``mer audit --predictions FILE.csv`` prints the scores only (``predictions_file``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from jsonargparse import ArgumentParser, Namespace

from datamodules.errors import MERError

from ..atomic_files import write_json


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="mer audit", exit_on_error=False,
        description="Honesty checks of a finished `mer loso` run (metrics recompute from its predictions, no test "
                    "subject in its fold's training/validation subjects, each sample tested once, weights never "
                    "chosen on test data), or, with --predictions, pooled UF1/UAR of any predictions CSV beside the "
                    "mean of its per-subject (and per-fold) scores. Exit code 1 when a check fails.")
    parser.add_argument("run_dir", type=Optional[Path], nargs="?", default=None, help="a pooled `mer loso` run directory")
    parser.add_argument("--predictions", type=Optional[Path], default=None, metavar="FILE.csv",
                        help="a predictions CSV (ours or another project's) with subject, label and prediction columns")
    parser.add_argument("--subject-col", default="subject", help="subject column of --predictions")
    parser.add_argument("--label-col", default="label", help="true-label column of --predictions (integers or names)")
    parser.add_argument("--pred-col", default="pred", help="predicted-label column of --predictions")
    parser.add_argument("--fold-col", type=Optional[str], default=None,
                        help="fold column of --predictions (default: 'fold' when the file has one)")
    parser.add_argument("--output", type=Optional[Path], default=None, metavar="FILE.json",
                        help="where to write the audit (default RUN_DIR/audit.json, or FILE.audit.json beside --predictions)")
    return parser


def main(argv: list[str]) -> None:
    """`mer audit` on `argv`."""
    run(build_parser().parse_args(argv))


def run(args: Namespace) -> None:
    if (args.run_dir is None) == (args.predictions is None):
        raise MERError("give either a run directory (mer audit RUN_DIR) or --predictions FILE.csv, not both or neither")
    if args.predictions is not None:
        from .predictions_file import Columns, audit_predictions

        averaging, record = audit_predictions(args.predictions, Columns(args.subject_col, args.label_col, args.pred_col,
                                                                        args.fold_col))
        output = args.output or args.predictions.with_suffix(".audit.json")
        write_json(output, record)
        print("\n".join(averaging.lines() + [f"written: {output}"]))
        return
    from .checks import audit_run

    result = audit_run(args.run_dir, args.output)
    print(result.report())
    if not result.passed:
        sys.exit(1)
