"""A study's table: every measured number per row, mean ± sample std over the replicate seeds."""

from __future__ import annotations

import math
from typing import Any

from ..metrics import mean_std
from .spec import StudySpec


def study_table(spec: StudySpec, measured: dict[str, dict[int, dict[str, dict[str, float]]]],
                seconds: dict[str, dict[int, float]]) -> dict[str, Any]:
    """table.json's contents. `measured[row][seed][measure]` = {metric: value}; `seconds[row][seed]`:
    wall time of that replicate (its last `mer loso` call and its measures)."""
    rows = []
    for row in spec.rows:
        keys = [f"{m}/{metric}" for m in spec.measures
                for metric in _metric_names(m, measured.get(row.name, {}))]
        metrics = {}
        for key in keys:
            measure, metric = key.split("/", 1)
            values = {seed: by_measure[measure][metric] for seed, by_measure in measured.get(row.name, {}).items()
                      if metric in by_measure.get(measure, {})}
            mean, std = mean_std([v for v in values.values() if not math.isnan(v)])
            metrics[key] = {"mean": mean, "std": std, "values": values}
        rows.append({"name": row.name, "configs": row.configs, "args": row.args, "metrics": metrics,
                     "seconds": seconds.get(row.name, {})})
    return {"study": spec.name, "title": spec.title, "seeds": spec.seeds, "fresh_data": spec.fresh_data,
            "std": "sample standard deviation over the replicate seeds (ddof 1)", "rows": rows}


def _metric_names(measure: str, by_seed: dict[int, dict[str, dict[str, float]]]) -> list[str]:
    names: list[str] = []
    for by_measure in by_seed.values():
        names += [name for name in by_measure.get(measure, {}) if name not in names]
    return names


def markdown(table: dict[str, Any]) -> str:
    """One line per measured number, one column per row: 'mean ± std' (and [n] when fewer seeds finished)."""
    rows = table["rows"]
    keys: list[str] = []
    for row in rows:
        keys += [key for key in row["metrics"] if key not in keys]
    lines = [f"# {table['title']}", "",
             f"Replicate seeds {table['seeds']} ({'a fresh synthetic set per seed' if table['fresh_data'] else 'one data set'}); "
             "mean ± sample std over the seeds.", "",
             "| measure | " + " | ".join(row["name"] for row in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for key in keys:
        cells = [_cell(row["metrics"].get(key), len(table["seeds"])) for row in rows]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    minutes = [sum(row["seconds"].values()) / 60 for row in rows]
    lines.append("| wall time (min, all seeds) | " + " | ".join(f"{m:.1f}" for m in minutes) + " |")
    return "\n".join(lines) + "\n"


def _cell(metric: dict[str, Any] | None, n_seeds: int) -> str:
    if not metric or not metric["values"]:
        return "–"
    mean, std, n = metric["mean"], metric["std"], len(metric["values"])
    text = f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"
    return text if n == n_seeds else f"{text} [n={n}]"
