"""After a sweep: the trials table (CSV + printed), MEDN Figure 6 style plots and a 2-D grid's heatmap.

Figure 6 of MEDN (§V-B4) draws the score against λ_au with λ_orth = 1 and against λ_orth with
λ_au = 1. Here: one figure per swept parameter (``figure6_<parameter>.png``, with PDF and SVG beside
it for a paper), UF1 and UAR side by side against the parameter's value, one line per setting of the
other parameters (a grid) or one point per trial (bayes/random). A trial run with ``--seeds`` shows the
mean ± standard deviation over its seeds as an error bar. The scores are those of the spec metric's
scope (all samples, or the database / test set it names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from ..atomic_files import atomic_write_csv
from ..plots import column_decimals, pyplot, readable_text_colour, save_figure
from ..runner.pooling import wandb_summary
from ..runner.seed_runs import SUMMARY_JSON as SEEDS_SUMMARY, seeds_metrics
from .spec import SweepSpec
from .study import read_pooled

TABLE = "trials.csv"
FIGURE = "figure6_{}.png"
HEATMAP = "heatmap.png"
PAPER_FORMATS = ("pdf", "svg")
SCORES = (("uf1", "UF1"), ("uar", "UAR"))  # the two panels of each figure
SCORE_NAMES = {**dict(SCORES), "acc": "accuracy"}
MAX_LINES = 8  # our choice: beyond this many settings of the other parameters a panel shows points only


def trials_table(study: optuna.Study, spec: SweepSpec, output: Path) -> pd.DataFrame:
    """One row per trial: number, state, retry_of, each parameter (``spec.column_names``), the metric, UF1
    and UAR of the metric's scope with their std over the trial's seeds (``seeds``: how many), its run folder."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        complete = t.state == TrialState.COMPLETE
        rows.append({"trial": t.number, "state": t.state.name, "retry_of": t.system_attrs.get("failed_trial"),
                     **{column: t.params.get(name) for name, column in spec.column_names.items()},
                     spec.metric: t.value if complete else None,
                     **(trial_scores(output / t.user_attrs["run_dir"], spec.metric) if complete else {}),
                     "minutes": round(t.duration.total_seconds() / 60, 2) if t.duration else None,
                     "run_dir": t.user_attrs.get("run_dir")})
    return pd.DataFrame(rows)


def trial_scores(run_dir: Path, metric: str) -> dict[str, Any]:
    """UF1/UAR (and their std over seeds) of a finished trial, in the scope of `metric` (``pooled/uf1`` ->
    all samples, ``pooled/casme2/uf1`` -> CASME II). Empty when its files are gone."""
    scope = metric.rsplit("/", 1)[0]
    seeds_file, metrics_file = run_dir / SEEDS_SUMMARY, run_dir / "metrics.json"
    if seeds_file.is_file():
        summary = read_pooled(seeds_file)
        mean, std = (wandb_summary(seeds_metrics(summary, statistic)) for statistic in ("mean", "std"))
        seeds = len(summary["seeds"])
    elif metrics_file.is_file():
        mean, std, seeds = wandb_summary(read_pooled(metrics_file)), {}, 1
    else:
        return {}
    scores: dict[str, Any] = {"seeds": seeds}
    for score, _ in SCORES:
        scores[score] = mean.get(f"{scope}/{score}")
        scores[f"{score}_std"] = std.get(f"{scope}/{score}")
    return scores


def swept(spec: SweepSpec) -> list[str]:
    """Column names of the parameters that take more than one value."""
    return [spec.column_names[p.name] for p in spec.parameters if len(p.values) != 1]


def summarize(study: optuna.Study, spec: SweepSpec, output: Path) -> pd.DataFrame:
    """Write trials.csv, one figure6_<parameter>.png (+ PDF, SVG) per swept parameter and, for a 2-D grid,
    heatmap.png (+ PDF, SVG); print the table; returns it."""
    table = trials_table(study, spec, output)
    atomic_write_csv(output / TABLE, table)
    complete = table[table["state"] == "COMPLETE"]
    names = swept(spec)
    written = [output / TABLE]
    if len(complete) and names and "uf1" in complete:
        for name in names:
            written += save_figure(figure6(complete, name, names, spec), output / FIGURE.format(name),
                                   formats=PAPER_FORMATS)
        if spec.method == "grid" and len(names) == 2:
            written += save_figure(heatmap(complete, names, spec.metric), output / HEATMAP, formats=PAPER_FORMATS)
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


def axis_label(name: str) -> str:
    """A parameter's axis label: ``lambda_au`` -> λ_au as mathtext (MEDN's symbols), else the name."""
    if name.startswith("lambda_"):
        return rf"$\lambda_{{\mathrm{{{name.removeprefix('lambda_').replace('_', '-')}}}}}$"
    return name


def score_label(score: str, metric: str) -> str:
    """``UF1``, or ``UF1 (casme2)`` for a metric scoped to one database / test set."""
    scope = metric.rsplit("/", 1)[0].removeprefix("pooled").strip("/")
    return f"{SCORE_NAMES[score]} ({scope})" if scope else SCORE_NAMES[score]


def _texts(values: list[Any]) -> list[str]:
    """Parameter values as tick or legend text, numbers alike (0.0, 0.5, 1.0)."""
    decimals = column_decimals(values)
    return [f"{v:.{decimals}f}" if decimals is not None else str(v) for v in values]


def _points(rows: pd.DataFrame, name: str, score: str) -> tuple[pd.Series, pd.Series]:
    """Mean of `score` per value of `name`, and the error bar: the seeds' std where a trial has several seeds."""
    grouped = rows.groupby(name)
    return grouped[score].mean().sort_index(), grouped[f"{score}_std"].mean().sort_index()


def figure6(complete: pd.DataFrame, name: str, names: list[str], spec: SweepSpec) -> Any:
    """UF1 and UAR against the values of parameter `name`: one line per setting of the other swept
    parameters (grid), else one point per trial; error bars = std over a trial's seeds."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(SCORES), figsize=(4.2 * len(SCORES), 3.4), squeeze=False, layout="constrained")
    others = [n for n in names if n != name]
    groups = list(complete.groupby(others)) if others else [((), complete)]
    shown = {n: dict(zip(complete[n], _texts(list(complete[n])))) for n in others}
    for ax, (score, _) in zip(axes[0], SCORES):
        if spec.method == "grid" and len(groups) <= MAX_LINES:
            for key, group in groups:
                key = key if isinstance(key, tuple) else (key,)
                label = ", ".join(f"{axis_label(n)} = {shown[n][v]}" for n, v in zip(others, key))
                mean, std = _points(group, name, score)
                ax.errorbar(mean.index, mean.to_numpy(), yerr=std.fillna(0).to_numpy(), marker="o", capsize=3,
                            label=label or None)
            if others:
                ax.legend(fontsize=8)
        else:
            ax.errorbar(complete[name], complete[score], yerr=complete[f"{score}_std"].fillna(0), fmt="o",
                        markersize=4, capsize=3)
        ax.set_xlabel(axis_label(name))
        ax.set_ylabel(score_label(score, spec.metric))
        ax.grid(alpha=0.3)
    seeds = complete["seeds"].max()
    note = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed per trial"
    fig.suptitle(f"{spec.name}: pooled scores against {axis_label(name)} ({note})", fontsize=10)
    return fig


def heatmap(complete: pd.DataFrame, names: list[str], metric: str) -> Any:
    """The metric over a 2-D grid, one annotated cell per grid point (black or white text by the cell's colour)."""
    plt = pyplot()
    grid = complete.pivot_table(index=names[0], columns=names[1], values=metric, aggfunc="mean").sort_index()
    fig, ax = plt.subplots(figsize=(0.75 * grid.shape[1] + 3.2, 0.55 * grid.shape[0] + 2.4), layout="constrained")
    image = ax.imshow(grid.to_numpy(), cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), _texts(list(grid.columns)))
    ax.set_yticks(range(grid.shape[0]), _texts(list(grid.index)))
    ax.set_xlabel(axis_label(names[1]))
    ax.set_ylabel(axis_label(names[0]))
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            value = grid.iat[i, j]
            if value == value:  # not NaN (a missing grid point)
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8,
                        color=readable_text_colour(image.cmap(image.norm(value))))
    fig.colorbar(image, ax=ax, label=score_label(metric.rsplit("/", 1)[-1], metric))
    return fig
