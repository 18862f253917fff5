"""``mer report``: one results table across finished LOSO runs, ready to paste into a paper.

Each row is a group of runs whose configs differ only in seeds (``SEED_KEYS``): pooled UF1, UAR and
accuracy (overall, and per database / test set where a run has several) as mean ± sample std (ddof 1)
over the group's runs, with n. The config keys that differ between the groups are columns, named by
their shortest unambiguous dotted suffix (``model.init_args.lambda_au`` -> ``lambda_au``). The
confusion matrices (summed over each group's runs, rows normalised) are drawn side by side in one PNG.

A directory argument is a run directory (``run.json``/``metrics.json``), or holds runs to expand:
``seed_N/`` (``mer loso --seeds``) and ``trials/*/`` (``mer sweep``), recursively.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ArgumentParser, Namespace

from datamodules.errors import MERError

from .atomic_files import atomic_write_text
from .output_folder import check_output_file, writing_into
from .plots import column_decimals, draw_confusion, pyplot, save_figure

# Keys that are only a seed: runs differing in them alone are repetitions (our choice: the split seed
# too, it only draws the validation subjects / k-fold partition). Keys that cannot change a result
# (paths, worker counts) are ignored.
SEED_KEYS = ("seed_everything", "data.init_args.split_seed")
IGNORED_KEYS = ("data.init_args.cache_dir", "data.init_args.prepare_workers", "data.init_args.num_workers",
                "trainer.default_root_dir")
METRICS = (("uf1", "UF1"), ("uar", "UAR"), ("acc", "Acc"))
BREAKDOWNS = ("per_dataset", "per_test_set")
EXPANDED = ("seed_*", "trials/*")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="mer report", exit_on_error=False,
        description="One table across finished LOSO runs: pooled UF1/UAR/accuracy overall and per database, "
                    "mean ± std over runs that differ only in seed, the config differences as columns; "
                    "their confusion matrices side by side in one PNG.")
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                        help="run directories, or directories holding seed_N/ (mer loso --seeds) or trials/*/ (mer sweep)")
    parser.add_argument("--by", default=None, metavar="PARAM",
                        help="first column and sort key, e.g. lambda_au or model.init_args.lambda_au")
    parser.add_argument("--format", type=Literal["md", "csv", "latex"], default="md",
                        help="md (GitHub pipe table), csv (plain, mean and std columns) or latex (booktabs tabular)")
    parser.add_argument("--output", type=Path, default=None, help="write the table here (default: print only)")
    parser.add_argument("--confusion", type=Path, default=None,
                        help="PNG of the confusion matrices (default: OUTPUT's name + .confusion.png, "
                             "or report.confusion.png here)")
    parser.add_argument("--digits", type=int, default=4, help="decimals of the metrics")
    parser.add_argument("--columns", default=None, metavar="KEYS",
                        help="the config keys shown as columns, comma-separated, e.g. model or lambda_au,lr (default: "
                             "every key whose value differs between rows; 'none': none). Rows are still the "
                             "groups of runs that differ only in seed")
    parser.add_argument("--metrics", default="uf1,uar,acc", metavar="NAMES",
                        help="the metric columns, comma-separated, from uf1, uar, acc")
    return parser


@dataclass
class Run:
    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]  # flattened: dotted key -> value

    @property
    def label(self) -> str:
        """The run's name: its directory, or the folder above a seed_N/ directory; a sweep trial
        (``STUDY/trials/<parameters>/``) by its study's folder, since the parameters have their own columns."""
        path = self.path.parent if self.path.name.startswith("seed_") else self.path
        return path.parent.parent.name if path.parent.name == "trials" else path.name


@dataclass
class Group:
    """Runs whose configs differ only in seeds."""

    runs: list[Run]
    params: dict[str, Any] = field(default_factory=dict)  # the differing keys' values

    @property
    def label(self) -> str:
        return ", ".join(dict.fromkeys(run.label for run in self.runs))

    def values(self, scope: str, metric: str) -> list[float]:
        """The metric of every run of the group (scope 'all' or a database / test set name)."""
        found = [scoped(run.metrics, scope) for run in self.runs]
        return [m[metric] for m in found if m is not None]


def main(argv: list[str]) -> None:
    """`mer report` on `argv`."""
    run(build_parser().parse_args(argv))


def run(args: Namespace) -> None:
    confusion = args.confusion or (args.output.with_name(args.output.stem + ".confusion.png") if args.output
                                   else Path("report.confusion.png"))
    if args.output is not None:
        check_output_file(args.output)
    check_output_file(confusion, "--confusion")
    metrics = parse_metrics(args.metrics)
    runs = load_runs(args.dirs)
    table = build_table(runs, args.by, None if args.columns is None else split_names(args.columns, "none"), metrics)
    text = format_table(table, args.format, args.digits)
    print(text, end="")
    if args.output is not None:
        with writing_into(args.output):
            args.output.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.output, text)
        print(f"table: {args.output}", file=sys.stderr)
    with writing_into(confusion, "--confusion"):
        plot_confusions(table, confusion)
    print(f"confusion matrices: {confusion}", file=sys.stderr)


def split_names(text: str, empty: str = "") -> list[str]:
    """'a, b' -> ['a', 'b']; `empty` (e.g. 'none') -> []."""
    return [] if text.strip() == empty else [name.strip() for name in text.split(",") if name.strip()]


def parse_metrics(text: str) -> list[tuple[str, str]]:
    """``--metrics``: (key, header) pairs in the order given."""
    known = dict(METRICS)
    names = split_names(text)
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise MERError(f"--metrics {text}: give metric names from {', '.join(known)}, comma-separated")
    return [(name, known[name]) for name in names]


def find_runs(directory: Path) -> list[Path]:
    """The run directories in `directory` (itself, or seed_N/ and trials/*/ below it, recursively)."""
    if not directory.is_dir():
        raise MERError(f"{directory} is not a directory; give mer loso run directories")
    if (directory / "run.json").is_file() or (directory / "metrics.json").is_file():
        return [directory]
    found = [run for pattern in EXPANDED for sub in sorted(directory.glob(pattern)) if sub.is_dir()
             for run in find_runs(sub)]
    if not found:
        raise MERError(f"{directory} holds no mer loso run (no run.json or metrics.json, no seed_N/ or trials/*/)")
    return found


def load_runs(directories: list[Path]) -> list[Run]:
    """The finished runs below `directories`; unfinished ones are named in one warning line."""
    paths = list(dict.fromkeys(run for directory in directories for run in find_runs(directory)))
    finished = [path for path in paths if (path / "metrics.json").is_file()]
    unfinished = [str(path) for path in paths if path not in finished]
    if not finished:
        raise MERError(f"no finished run (metrics.json) among {', '.join(unfinished)}; finish them with mer loso")
    if unfinished:
        print(f"warning: skipping {len(unfinished)} unfinished run(s) (no metrics.json yet): {', '.join(unfinished)}",
              file=sys.stderr)
    return [load_run(path) for path in finished]


def load_run(path: Path) -> Run:
    file = path / "metrics.json"
    try:
        metrics = json.loads(file.read_text())
        missing = [key for key in ("uf1", "uar", "acc", "confusion_matrix", "class_names", "config") if key not in metrics]
    except (OSError, ValueError) as err:
        raise MERError(f"{file} is unreadable ({err}); pool the run again with mer loso --aggregate-only {path}") from None
    if missing:
        raise MERError(f"{file} lacks {', '.join(missing)}: not written by mer loso; pool it again with "
                       f"mer loso --aggregate-only {path}")
    return Run(path, metrics, flatten(metrics["config"]))


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'init_args': {'lr': 1}}} -> {'model.init_args.lr': 1} (lists are values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def scoped(metrics: dict[str, Any], scope: str) -> dict[str, Any] | None:
    """The metrics of 'all' samples, or of one database / test set (None if the run has none of it)."""
    if scope == "all":
        return metrics
    return next((m[scope] for key in BREAKDOWNS if scope in (m := metrics.get(key) or {})), None)


@dataclass
class Table:
    groups: list[Group]
    columns: dict[str, str]  # differing config key -> column name, in column order
    scopes: list[str]  # 'all', then databases / test sets
    metrics: list[tuple[str, str]] = field(default_factory=lambda: list(METRICS))  # (key, header) shown


def build_table(runs: list[Run], by: str | None, columns: list[str] | None = None,
                metrics: list[tuple[str, str]] | None = None) -> Table:
    """Group the runs, find the differing keys and name them (or name `columns`), order the rows."""
    keys = sorted({key for run in runs for key in run.config})
    by_key = resolve_key(by, keys, "--by") if by else None
    seeds = [key for key in SEED_KEYS if key != by_key]
    compared = [key for key in keys if key not in seeds and key not in IGNORED_KEYS]
    groups: dict[str, Group] = {}
    for run_ in runs:
        identity = json.dumps([run_.config.get(key) for key in compared], default=str)
        groups.setdefault(identity, Group([])).runs.append(run_)
    differing = [key for key in compared if len({json.dumps(g.runs[0].config.get(key), default=str)
                                                 for g in groups.values()}) > 1]
    if columns is not None:
        differing = list(dict.fromkeys(resolve_key(column, keys, "--columns") for column in columns))
    if by_key is not None:
        differing = [by_key] + [key for key in differing if key != by_key]
    names = short_names(differing, keys)
    for group in groups.values():
        group.params = {key: group.runs[0].config.get(key) for key in differing}
        repeated = [run_.path for run_ in _repeated_seeds(group.runs, seeds)]
        if repeated:
            raise MERError(f"{', '.join(map(str, repeated))} repeat another run's config and seeds: the mean ± std of "
                           "their row would count one seed twice; give each run once (or runs of other seeds)")
    ordered = sorted(groups.values(), key=lambda g: ([sort_key(g.params[key]) for key in differing], g.label))
    return Table(ordered, names, ["all", *breakdown_scopes(runs)], metrics or list(METRICS))


def _repeated_seeds(runs: list[Run], seeds: list[str]) -> list[Run]:
    """The runs of one group whose seeds an earlier run of the group already had: repetitions of one run."""
    seen: set[str] = set()
    repeated = []
    for run_ in runs:
        key = json.dumps([run_.config.get(seed) for seed in seeds], default=str)
        if key in seen:
            repeated.append(run_)
        seen.add(key)
    return repeated


def resolve_key(param: str, keys: list[str], option: str) -> str:
    """A full dotted key, or a dotted suffix naming exactly one key ('model' names model.class_path)."""
    for candidate in (param, f"{param}.class_path"):
        if candidate in keys:
            return candidate
    matches = [key for key in keys if key.endswith("." + param)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise MERError(f"{option} {param} is ambiguous: {', '.join(matches)}; give the full key")
    raise MERError(f"{option} {param}: no config key of these runs is named so (e.g. model.init_args.lr or lr)")


def short_names(columns: list[str], keys: list[str]) -> dict[str, str]:
    """Each column's shortest dotted suffix that no other config key ends with ('model.class_path' -> 'model')."""
    names = {}
    for column in columns:
        parts = column.removesuffix(".class_path").split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if sum(key == name or key.endswith("." + name) for key in keys) <= 1 or n == len(parts):
                names[column] = name
                break
    return names


def breakdown_scopes(runs: list[Run]) -> list[str]:
    """Databases / test sets, shown when some run has more than one of them."""
    scopes: dict[str, None] = {}
    for key in BREAKDOWNS:
        if any(len(run.metrics.get(key) or {}) > 1 for run in runs):
            scopes.update(dict.fromkeys(name for run in runs for name in run.metrics.get(key) or {}))
    return list(scopes)


def sort_key(value: Any) -> tuple[int, Any]:
    """Numbers numerically before everything else as text; None last."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return (1, "~" if value is None else str(value))
    return (0, value)


def display(value: Any, column: str, decimals: int | None = None) -> str:
    """A config value as a cell: class paths by class name, numbers with the column's `decimals`."""
    if value is None:
        return "—"
    if column.endswith("class_path") and isinstance(value, str):
        return value.rsplit(".", 1)[-1]
    if isinstance(value, float | int) and not isinstance(value, bool) and decimals is not None:
        return f"{value:.{decimals}f}"
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, list | dict | bool) else str(value)


def param_cells(table: Table) -> dict[str, list[str]]:
    """Each parameter column's cells, one per group, formatted alike."""
    cells = {}
    for key in table.columns:
        values = [group.params[key] for group in table.groups]
        decimals = column_decimals(values)
        cells[key] = [display(value, key, decimals) for value in values]
    return cells


def metric_headers(table: Table) -> list[tuple[str, str, str]]:
    """(scope, metric key, header) of every metric column."""
    return [(scope, key, header if scope == "all" else f"{scope} {header}")
            for scope in table.scopes for key, header in table.metrics]


def format_table(table: Table, fmt: str, digits: int) -> str:
    """The table as a GitHub pipe table, a plain CSV or a booktabs tabular."""
    from .metrics import mean_std

    if fmt == "csv":
        return csv_table(table)
    plus_minus = " ± " if fmt == "md" else r" $\pm$ "
    header = ["run", *table.columns.values(), "n", *(h for _, _, h in metric_headers(table))]
    params = param_cells(table)
    rows = []
    for index, group in enumerate(table.groups):
        cells = [group.label, *(params[key][index] for key in table.columns), str(len(group.runs))]
        for scope, key, _ in metric_headers(table):
            mean, std = mean_std(group.values(scope, key))
            cells.append("—" if math.isnan(mean) else f"{mean:.{digits}f}"
                         + ("" if math.isnan(std) else f"{plus_minus}{std:.{digits}f}"))
        rows.append(cells)
    return markdown(header, rows, len(table.columns)) if fmt == "md" else latex(header, rows, len(table.columns))


def markdown(header: list[str], rows: list[list[str]], n_params: int) -> str:
    align = ["---"] * (1 + n_params) + ["---:"] * (len(header) - 1 - n_params)
    lines = [header, align, *rows]
    return "".join("| " + " | ".join(cell.replace("|", r"\|") for cell in line) + " |\n" for line in lines)


def latex(header: list[str], rows: list[list[str]], n_params: int) -> str:
    def escape(cell: str) -> str:
        for char in "_%&#":
            cell = cell.replace(char, "\\" + char)
        return cell.replace("—", "--")

    spec = "l" * (1 + n_params) + "r" * (len(header) - 1 - n_params)
    body = [" & ".join(escape(c) if "$" not in c else c for c in row) + r" \\" for row in rows]
    return "\n".join([rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(map(escape, header)) + r" \\",
                      r"\midrule", *body, r"\bottomrule", r"\end{tabular}"]) + "\n"


def csv_table(table: Table) -> str:
    """One line per group: its runs, parameters, n, then mean and std of every metric (empty when undefined)."""
    from .metrics import mean_std

    import pandas as pd

    records = []
    for group in table.groups:
        record = {"run": group.label, **{name: group.params[key] for key, name in table.columns.items()},
                  "n": len(group.runs)}
        for scope, key, _ in metric_headers(table):
            prefix = key if scope == "all" else f"{scope}_{key}"
            record[f"{prefix}_mean"], record[f"{prefix}_std"] = mean_std(group.values(scope, key))
        record["dirs"] = ";".join(str(run.path) for run in group.runs)
        records.append(record)
    return pd.DataFrame(records).to_csv(index=False)


def plot_confusions(table: Table, path: Path) -> None:
    """Each group's confusion matrix (counts summed over its runs, rows normalised) side by side, as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(confusion_figure(table), path)


def confusion_figure(table: Table) -> Any:
    """The groups' confusion matrices, four to a row; each panel's title (run, parameters, UF1) wraps to
    the panel's width."""
    import textwrap

    import numpy as np

    from .metrics import mean_std

    plt = pyplot()
    n = len(table.groups)
    n_cols = min(n, 4)
    n_rows = math.ceil(n / n_cols)
    n_classes = max(len(g.runs[0].metrics["class_names"]) for g in table.groups)
    side = 1.0 * n_classes + 2
    width = max(14, int(side * 9))  # characters of a title line at font size 8 (our choice: ~9 per inch)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(side * n_cols, (side + 0.5) * n_rows), squeeze=False,
                             layout="constrained")
    params = param_cells(table)
    for index, (ax, group) in enumerate(zip(axes.flat, table.groups)):
        counts = np.sum([np.asarray(run.metrics["confusion_matrix"]) for run in group.runs], axis=0)
        draw_confusion(ax, counts, group.runs[0].metrics["class_names"], with_counts=False, fontsize=7)
        setting = ", ".join(f"{name}={params[key][index]}" for key, name in table.columns.items())
        uf1, _ = mean_std(group.values("all", "uf1"))
        lines = [group.label, setting, f"UF1 {uf1:.3f} (n={len(group.runs)})"]
        ax.set_title("\n".join(wrapped for line in lines if line for wrapped in textwrap.wrap(line, width)), fontsize=8)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.supxlabel("predicted")
    fig.supylabel("true")
    return fig
