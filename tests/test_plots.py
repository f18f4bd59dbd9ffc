"""Plots and image grids: they write real PNG files of a sensible size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from digitlab.evaluate.grid import save_image_grid
from digitlab.evaluate.plots import plot_bars, plot_confusion, plot_curves


def assert_png(path, min_size=(100, 100)):
    assert path.exists()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        im.verify()


def history(n=3, with_gaps=False):
    rows = []
    for e in range(1, n + 1):
        test = None if with_gaps and e % 2 else 1 - 0.5 / e
        rows.append(
            {
                "epoch": e,
                "train_loss": 1 / e,
                "train_acc": 1 - 0.6 / e,
                "test_loss": None if test is None else 1.1 / e,
                "test_acc": test,
                "time": 1.5 * e,
            }
        )
    return rows


def test_plot_curves(tmp_path):
    assert plot_curves(history(), tmp_path / "curves.png").axes  # the figure, for a notebook
    assert_png(tmp_path / "curves.png", (500, 200))


def test_plot_curves_skips_missing_test_values(tmp_path):
    plot_curves(history(4, with_gaps=True), tmp_path / "sub" / "curves.png")
    assert_png(tmp_path / "sub" / "curves.png")


def test_plot_confusion(tmp_path):
    cm = np.arange(100).reshape(10, 10)
    plot_confusion(cm, [str(i) for i in range(10)], tmp_path / "cm.png")
    assert_png(tmp_path / "cm.png", (300, 300))
    names = ["airplane", "automobile", "bird"]
    plot_confusion([[5, 1, 0], [0, 3, 2], [0, 0, 0]], names, tmp_path / "cm3.png")
    assert_png(tmp_path / "cm3.png")


def test_plot_bars(tmp_path):
    table = {"mlp": {"normal": 0.9, "permuted": 0.89}, "cnn-small": {"normal": 0.95, "permuted": 0.8}}
    plot_bars(table, tmp_path / "bars.png", title="t")
    assert_png(tmp_path / "bars.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid(tmp_path, channels):
    images = torch.randint(0, 256, (23, channels, 28, 28), dtype=torch.uint8)
    path = save_image_grid(
        images, [f"{i}" for i in range(23)], tmp_path / "g.png", ncols=10, title="grid", title_colors=["red"] * 23
    )
    assert_png(path, (600, 250))


def test_image_grid_edge_cases(tmp_path):
    one = save_image_grid(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), ["x"], tmp_path / "one.png")
    assert_png(one, (50, 50))
    none = save_image_grid(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), [], tmp_path / "none.png")
    assert_png(none, (50, 50))
    with pytest.raises(ValueError):
        save_image_grid(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), ["only one"], tmp_path / "bad.png")


def test_plots_return_figures_and_save_only_when_given_a_path(tmp_path):
    from matplotlib.figure import Figure

    from digitlab.evaluate.grid import image_grid
    from digitlab.evaluate.plots import plot_compare

    figures = [
        plot_confusion([[5, 1], [0, 3]], ["a", "b"]),
        plot_bars({"mlp": {"normal": 0.9}}),
        plot_compare({"run": history()}),
        image_grid(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), ["a", "b", "c"]),
    ]
    assert all(isinstance(f, Figure) and f.axes for f in figures)
    assert list(tmp_path.iterdir()) == []  # nothing written without a path
    fig = image_grid(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), ["a", "b"], tmp_path / "sub" / "g.png")
    assert isinstance(fig, Figure)
    assert_png(tmp_path / "sub" / "g.png", (50, 50))


def test_plot_bars_error_bars_and_a_long_title(tmp_path):
    table = {"mlp": {"normal": 0.91, "permuted": 0.90}, "cnn-small": {"normal": 0.97, "permuted": 0.89}}
    errors = {"mlp": {"normal": 0.01, "permuted": 0.02}, "cnn-small": {"normal": 0.005, "permuted": 0.03}}
    title = "mnist: fully-connected vs CNN on normal and shuffled pixels (mean ± std over 3 seeds)"
    fig = plot_bars(table, tmp_path / "bars.png", title=title, errors=errors)
    ax = fig.axes[0]
    assert len(ax.get_title().splitlines()) >= 2  # wrapped to the figure's width, not clipped at its edge
    fig.canvas.draw()
    title_box = ax.title.get_window_extent()
    assert title_box.x0 >= 0 and title_box.x1 <= fig.bbox.width
    labels = [t.get_text() for t in ax.texts]
    assert "0.970\n±0.005" in labels and "0.890\n±0.030" in labels
    assert_png(tmp_path / "bars.png")


def test_plot_compare_overlays_runs(tmp_path):
    from digitlab.evaluate.plots import plot_compare

    fig = plot_compare({"a": history(3), "b": history(5, with_gaps=True)}, tmp_path / "compare.png")
    loss, acc = fig.axes
    assert len(loss.lines) == 4 and len(acc.lines) == 2  # train and test loss per run; test accuracy per run
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["a", "b"]
    assert list(acc.lines[1].get_xdata()) == [2, 4]  # epochs without a test evaluation are skipped
    assert_png(tmp_path / "compare.png", (800, 300))
