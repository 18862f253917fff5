"""Result files of a LOSO run: atomic writes, the confusion-matrix plot and the printed table."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd


_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def _replaced_atomically(path: Path, suffix: str = "") -> Iterator[Path]:
    """A fresh temporary path beside `path` (unique per writer, so processes writing the same file never
    mix their bytes) that replaces `path` once the block has written it; removed if the block fails."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_UMASK)  # mkstemp makes it private; results keep the permissions of a plain write
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a killed run never leaves half a file."""
    with _replaced_atomically(path) as tmp:
        tmp.write_text(text)


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


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
        with _replaced_atomically(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)


def result_table(metrics: dict[str, Any]) -> str:
    """Pooled UF1/UAR/accuracy overall, per official test set and per database, then per class."""
    lines = [f"LOSO result: pooled predictions of {metrics['n_folds']} folds, {metrics['n_samples']} samples",
             f"{'dataset':<12}{'n':>6}{'UF1':>9}{'UAR':>9}{'Acc':>9}"]
    rows = [("all", metrics), *(metrics.get("per_test_set") or {}).items()]
    if len(metrics["per_dataset"]) > 1:
        rows += list(metrics["per_dataset"].items())
    for name, m in rows:
        lines.append(f"{name:<12}{m['n_samples']:>6}{m['uf1']:>9.4f}{m['uar']:>9.4f}{m['acc']:>9.4f}")
    lines.append(f"{'class':<12}{'n':>6}{'F1':>9}{'recall':>9}")
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<12}{m['support']:>6}{m['f1']:>9.4f}{m['recall']:>9.4f}")
    return "\n".join(lines)
