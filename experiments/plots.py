"""Plots of result files: matplotlib on the file-only backend, confusion matrices, atomic PNG writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .atomic_files import replaced_atomically


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display on cluster nodes), imported when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_confusion(ax: Any, matrix: Sequence[Sequence[int]], class_names: Sequence[str], with_counts: bool,
                   fontsize: int) -> Any:
    """A row-normalised confusion matrix on `ax`: recall per cell (and the count with `with_counts`); the image."""
    import numpy as np

    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right", fontsize=fontsize)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=fontsize)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            text = f"{rates[i, j]:.2f}\n({counts[i, j]})" if with_counts else f"{rates[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black",
                    fontsize=fontsize)
    return image


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix with counts, saved as PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2.5, 1.1 * len(class_names) + 2))
    image = draw_confusion(ax, matrix, class_names, with_counts=True, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, label="recall")
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig: Any, path: Path, dpi: int = 120) -> None:
    """Write a matplotlib figure as PNG atomically (a reader never sees half a file) and close it."""
    import matplotlib.pyplot as plt

    try:
        with replaced_atomically(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
