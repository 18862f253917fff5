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
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                    color=readable_text_colour(image.cmap(image.norm(rates[i, j]))))
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


def save_figure(fig: Any, path: Path, dpi: int = 120, formats: Sequence[str] = ()) -> list[Path]:
    """Write a matplotlib figure as PNG atomically (a reader never sees half a file), and beside it in each
    of `formats` (e.g. ``("pdf", "svg")`` for a paper: same name, other suffix); close it. The paths written."""
    import matplotlib.pyplot as plt

    paths = [path, *(path.with_suffix(f".{suffix}") for suffix in formats)]
    try:
        for target in paths:
            with replaced_atomically(target, suffix=target.suffix) as tmp:
                fig.savefig(tmp, dpi=dpi, format=target.suffix[1:])
    finally:
        plt.close(fig)
    return paths


def readable_text_colour(rgba: Sequence[float]) -> str:
    """Black on a light cell, white on a dark one (relative luminance of the cell's colour, sRGB weights)."""
    red, green, blue = rgba[:3]
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.45 else "white"


def column_decimals(values: Sequence[Any]) -> int | None:
    """Decimals that show every number of a parameter column alike (0.0, 0.5, 1.0): those of its most
    precise value (at most 6, at least 1); None for a column of integers or text."""
    numbers = [v for v in values if isinstance(v, float | int) and not isinstance(v, bool)]
    if not numbers or len(numbers) != len([v for v in values if v is not None]) or \
            not any(isinstance(v, float) for v in numbers):
        return None
    return max(1, *(len(f"{v:.6f}".rstrip("0").split(".")[1]) for v in numbers))
