"""The figures a paper takes from the suite: MEDN Fig. 6-style sweep plots, the sweep heatmap and
`mer report`'s side-by-side confusion matrices. Checked as a reviewer would: the axes say what they
show (λ_au / λ_orth, UF1 / UAR), every text lies inside the canvas, panel titles do not run into each
other, and cell numbers contrast with their cell."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from experiments.report import Group, Run, Table, confusion_figure
from experiments.plots import readable_text_colour
from experiments.sweep.spec import load_spec
from experiments.sweep.summary import figure6, heatmap


def _spec(tmp_path: Path, values: dict[str, list[float]]):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "name": "medn-grid", "method": "grid", "metric": {"name": "pooled/uf1", "goal": "maximize"},
        "parameters": {f"model.init_args.{name}": {"values": v} for name, v in values.items()},
        "command": ["mer", "loso", "--config", "c.yaml", "${args}"]}))
    return load_spec(path)


def _trials(seeds: int) -> pd.DataFrame:
    rows = []
    for au in (0.0, 0.5, 1.0, 1.5, 2.0):
        for orth in (0.0, 1.0):
            rows.append({"lambda_au": au, "lambda_orth": orth, "pooled/uf1": 0.5 + au / 10, "uf1": 0.5 + au / 10,
                         "uar": 0.45 + orth / 10, "uf1_std": 0.02 if seeds > 1 else None,
                         "uar_std": 0.03 if seeds > 1 else None, "seeds": seeds})
    return pd.DataFrame(rows)


def texts_inside_canvas(fig) -> None:
    """The tight bounding box of everything drawn lies inside the figure (nothing clipped at an edge)."""
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    width, height = fig.get_size_inches()
    assert box.x0 >= -0.01 and box.y0 >= -0.01 and box.x1 <= width + 0.01 and box.y1 <= height + 0.01, (box, width, height)


def test_figure6_names_its_axes_and_shows_both_scores_with_seed_error_bars(tmp_path):
    spec = _spec(tmp_path, {"lambda_au": [0.0, 0.5, 1.0, 1.5, 2.0], "lambda_orth": [0.0, 1.0]})
    fig = figure6(_trials(seeds=3), "lambda_au", ["lambda_au", "lambda_orth"], spec)
    (uf1, uar) = fig.axes
    assert uf1.get_xlabel() == uar.get_xlabel() == r"$\lambda_{\mathrm{au}}$"
    assert (uf1.get_ylabel(), uar.get_ylabel()) == ("UF1", "UAR")
    assert "mean ± std over 3 seeds" in fig._suptitle.get_text()
    assert [t.get_text() for t in uf1.get_legend().get_texts()] == [r"$\lambda_{\mathrm{orth}}$ = 0.0", r"$\lambda_{\mathrm{orth}}$ = 1.0"]
    bars = [c for c in uf1.containers if c.has_yerr]
    assert len(bars) == 2  # one error-bar line per λ_orth
    segments = bars[0].lines[2][0].get_segments()
    assert [round(seg[1][1] - seg[0][1], 6) for seg in segments] == [0.04] * 5  # ± one std (0.02)
    line = uf1.get_lines()[0]
    assert list(line.get_xdata()) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert list(line.get_ydata()) == pytest.approx([0.5, 0.55, 0.6, 0.65, 0.7])
    texts_inside_canvas(fig)


def test_figure6_of_single_seed_trials_has_no_error_bars_and_says_so(tmp_path):
    spec = _spec(tmp_path, {"lambda_orth": [0.0, 1.0]})
    trials = _trials(seeds=1)
    fig = figure6(trials[trials["lambda_au"] == 1.0], "lambda_orth", ["lambda_orth"], spec)
    assert fig.axes[0].get_xlabel() == r"$\lambda_{\mathrm{orth}}$" and "one seed per trial" in fig._suptitle.get_text()
    segments = fig.axes[0].containers[0].lines[2][0].get_segments()
    assert all(seg[0][1] == seg[1][1] for seg in segments)  # zero-length bars
    texts_inside_canvas(fig)


def test_heatmap_cell_numbers_contrast_with_their_cell(tmp_path):
    fig = heatmap(_trials(seeds=1), ["lambda_au", "lambda_orth"], "pooled/uf1")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == (r"$\lambda_{\mathrm{orth}}$", r"$\lambda_{\mathrm{au}}$")
    image = ax.get_images()[0]
    texts = [t for t in ax.texts]
    assert len(texts) == 10
    for text in texts:
        rgba = image.cmap(image.norm(float(text.get_text())))
        luminance = 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]
        assert (text.get_color() == "black") == (luminance > 0.45)
    assert {t.get_color() for t in texts} == {"black", "white"}  # viridis runs dark to light over these values
    assert fig.axes[1].get_ylabel() == "UF1"  # the colour bar
    texts_inside_canvas(fig)


def test_readable_text_colour():
    assert readable_text_colour((1.0, 1.0, 1.0, 1.0)) == "black"
    assert readable_text_colour((0.0, 0.0, 0.3, 1.0)) == "white"
    assert readable_text_colour((0.27, 0.0, 0.33, 1.0)) == "white"  # viridis' dark end
    assert readable_text_colour((0.99, 0.91, 0.14, 1.0)) == "black"  # viridis' light end


def test_report_confusion_titles_fit_their_panels(tmp_path):
    """Long run labels and parameters wrap inside their panel: titles stay inside the canvas and do not
    overlap their neighbours'."""
    runs = []
    for i, au in enumerate((0.0, 0.5, 1.0, 1.5, 2.0)):
        metrics = {"uf1": 0.6, "uar": 0.6, "acc": 0.6, "class_names": ["negative", "positive", "surprise"],
                   "confusion_matrix": [[8, 1, 1], [2, 7, 1], [0, 1, 9]], "config": {}}
        runs.append(Run(tmp_path / f"medn-megc2019-cde-lambda-sensitivity-study-with-a-long-descriptive-folder-name-{i}", metrics,
                        {"model.init_args.lambda_au": au, "model.init_args.lambda_orth": 1.0}))
    table = Table([Group([run], {"model.init_args.lambda_au": run.config["model.init_args.lambda_au"]}) for run in runs],
                  {"model.init_args.lambda_au": "lambda_au"}, ["all"])
    fig = confusion_figure(table)
    texts_inside_canvas(fig)
    renderer = fig.canvas.get_renderer()
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    assert len(titles) == 5
    for a in range(len(titles)):
        for b in range(a + 1, len(titles)):
            assert not titles[a].overlaps(titles[b])
