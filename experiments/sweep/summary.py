"""After a sweep: the trials table (CSV + printed), MEDN Figure 6 style plot and a 2-D grid's heatmap.

Figure 6 of MEDN (§V-B4) draws the score against λ_au with λ_orth = 1 and against λ_orth with
λ_au = 1: here one panel per swept parameter, the metric against its value, one line per setting of
the other parameters (a grid) or one point per trial (bayes/random).
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from ..atomic_files import atomic_write_csv
from ..plots import pyplot, save_figure
from .spec import SweepSpec

TABLE = "trials.csv"
FIGURE = "figure6.png"
HEATMAP = "heatmap.png"
MAX_LINES = 8  # our choice: beyond this many settings of the other parameters a panel shows points only


def trials_table(study: optuna.Study, spec: SweepSpec) -> pd.DataFrame:
    """One row per trial: number, state, retry_of, each parameter (``spec.column_names``), the metric, its run folder."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name, "retry_of": t.system_attrs.get("failed_trial"),
                     **{column: t.params.get(name) for name, column in spec.column_names.items()},
                     spec.metric: t.value if t.state == TrialState.COMPLETE else None,
                     "minutes": round(t.duration.total_seconds() / 60, 2) if t.duration else None,
                     "run_dir": t.user_attrs.get("run_dir")})
    return pd.DataFrame(rows)


def swept(spec: SweepSpec) -> list[str]:
    """Column names of the parameters that take more than one value."""
    return [spec.column_names[p.name] for p in spec.parameters if len(p.values) != 1]


def summarize(study: optuna.Study, spec: SweepSpec, output: Path) -> pd.DataFrame:
    """Write trials.csv, figure6.png (and heatmap.png for a 2-D grid), print the table; returns it."""
    table = trials_table(study, spec)
    atomic_write_csv(output / TABLE, table)
    complete = table[table["state"] == "COMPLETE"]
    names = swept(spec)
    written = [output / TABLE]
    if len(complete) and names:
        plot_figure6(complete, names, spec, output / FIGURE)
        written.append(output / FIGURE)
        if spec.method == "grid" and len(names) == 2:
            plot_heatmap(complete, names, spec.metric, output / HEATMAP)
            written.append(output / HEATMAP)
    shown = table.drop(columns=["run_dir"]).to_string(index=False, float_format=lambda v: f"{v:.4f}")
    print(f"{spec.name}: {len(complete)} of {spec.budget} trials complete ({spec.metric}, "
          f"{'max' if spec.maximize else 'min'}imized)\n{shown}")
    if len(complete):
        best = complete.loc[complete[spec.metric].idxmax() if spec.maximize else complete[spec.metric].idxmin()]
        print(f"highest {spec.metric}: trial {best['trial']} ({best[spec.metric]:.4f}) in {output / str(best['run_dir'])}. "
              "This is the held-out subjects' score: a sensitivity study (MEDN Figure 6) reports every trial; "
              "quoting the highest as a result would select hyper-parameters on the test subjects")
    print(f"outputs: {', '.join(str(path) for path in written)}")
    return table


def _text(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plot_figure6(complete: pd.DataFrame, names: list[str], spec: SweepSpec, path: Path) -> None:
    """One panel per swept parameter: the metric against its value."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        others = [n for n in names if n != name]
        groups = list(complete.groupby(others)) if others else [((), complete)]
        if spec.method == "grid" and len(groups) <= MAX_LINES:
            for key, group in groups:
                key = key if isinstance(key, tuple) else (key,)
                label = ", ".join(f"{n}={_text(v)}" for n, v in zip(others, key))
                mean = group.groupby(name)[spec.metric].mean().sort_index()
                ax.plot(mean.index, mean.to_numpy(), marker="o", label=label or None)
            if others:
                ax.legend(fontsize=8)
        else:
            ax.scatter(complete[name], complete[spec.metric], s=18)
        ax.set_xlabel(name)
        ax.set_ylabel(spec.metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{spec.name}: {spec.metric} against each parameter", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_heatmap(complete: pd.DataFrame, names: list[str], metric: str, path: Path) -> None:
    """The metric over a 2-D grid, one annotated cell per grid point."""
    plt = pyplot()
    grid = complete.pivot_table(index=names[0], columns=names[1], values=metric, aggfunc="mean").sort_index()
    fig, ax = plt.subplots(figsize=(0.7 * grid.shape[1] + 3, 0.55 * grid.shape[0] + 2.2))
    image = ax.imshow(grid.to_numpy(), cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [_text(v) for v in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [_text(v) for v in grid.index])
    ax.set_xlabel(names[1])
    ax.set_ylabel(names[0])
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            value = grid.iat[i, j]
            if value == value:  # not NaN (a missing grid point)
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax, label=metric)
    fig.tight_layout()
    save_figure(fig, path)
