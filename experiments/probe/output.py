"""What ``mer probe`` prints and writes: the table, probe.json's contents and the bar chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..plots import pyplot, save_figure

POOLING = ("pooled: the balanced accuracy of every probed fold's held-out (true, predicted) subject pairs "
           "together; chance, chance_sd: its mean and standard deviation for a probe guessing uniformly among "
           "each fold's probed subjects (mean 1/m when every fold probes m subjects); ratio = balanced accuracy / chance")


def probe_table(result: dict[str, Any]) -> str:
    """One line per feature: dimension, pooled balanced accuracy, chance ± its sd, ratio."""
    whose = "held-out" if result.get("subjects") == "held_out" else "training"
    lines = [f"identity probe of {result['model']}: subject from features, linear, {whose} subjects, "
             f"{len(result['folds'])} fold(s) pooled",
             f"{'feature':<16}{'dim':>6}{'bal.acc':>10}{'chance ± sd':>16}{'ratio':>8}"]
    for name, feature in result["features"].items():
        pooled = feature["pooled"]
        chance = f"{pooled['chance']:.3f} ± {pooled['chance_sd']:.3f}"
        lines.append(f"{name:<16}{feature['dim']:>6}{pooled['balanced_accuracy']:>10.3f}{chance:>16}{pooled['ratio']:>8.2f}")
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)


def plot_probe(result: dict[str, Any], path: Path) -> None:
    """Bars of the pooled balanced accuracy per feature, each with its chance level as a dashed line."""
    plt = pyplot()

    names = list(result["features"])
    pooled = [result["features"][name]["pooled"] for name in names]
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2.5, 3.6))
    bars = ax.bar(range(len(names)), [p["balanced_accuracy"] for p in pooled], color="tab:blue", width=0.6)
    for i, p in enumerate(pooled):
        ax.hlines(p["chance"], i - 0.4, i + 0.4, colors="black", linestyles="dashed",
                  label="chance" if i == 0 else None)
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("subject balanced accuracy")
    ax.set_title(f"identity probe: {result['model']} ({len(result['folds'])} folds)", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
