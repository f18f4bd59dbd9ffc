"""Plots and image grids: they write real PNG files of a sensible size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from digitlab.evaluate.grid import image_grid, save_image_grid
from digitlab.evaluate.plots import plot_bars, plot_confusion, plot_curves


def assert_png(path, min_size=(100, 100), size=None):
    """A real PNG, at least ``min_size`` (or exactly ``size``: the figure's inches at 100 dpi), not blank."""
    assert path.exists()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        if size is not None:
            assert im.size == size
        im.verify()
    with Image.open(path) as im:  # verify() leaves the image unusable: open it again for the pixels
        pixels = np.asarray(im.convert("L"))
    assert pixels.min() < 128 < pixels.max()  # dark marks on a light figure: something was drawn


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
    fig = plot_curves(history(), tmp_path / "curves.png")  # the figure, for a notebook
    assert_png(tmp_path / "curves.png", size=(1000, 350))
    loss, acc = fig.axes
    assert [ax.get_title() for ax in (loss, acc)] == ["Training and test loss", "Training and test accuracy"]
    assert loss.get_xlabel() == "epoch" and acc.get_xlabel() == "epoch"  # no step losses: per epoch
    assert [line.get_label() for line in loss.lines] == ["train loss", "test loss (per epoch)"]
    assert list(loss.lines[0].get_xdata()) == [1, 2, 3] and list(loss.lines[0].get_ydata()) == [1, 0.5, 1 / 3]
    assert [line.get_label() for line in acc.lines] == ["train accuracy (per epoch)", "test accuracy (per epoch)"]
    assert list(acc.lines[1].get_ydata()) == [0.5, 0.75, 1 - 0.5 / 3]


def test_plot_curves_per_step(tmp_path):
    """With step losses: every step on the x axis, a smoothed curve over them, and epochs on the top axis."""
    rows = [dict(row, step=100 * row["epoch"]) for row in history()]
    steps = [1 / (1 + i / 50) for i in range(300)]
    fig = plot_curves(rows, tmp_path / "curves.png", steps=steps)
    assert_png(tmp_path / "curves.png", size=(1000, 350))
    loss, acc = fig.axes[:2]
    assert loss.get_xlabel() == "step" and acc.get_xlabel() == "step"
    each, smooth, test = loss.lines
    assert each.get_label() == "train loss (each step)" and len(each.get_xdata()) == 300
    assert smooth.get_label() == "train loss (mean of 6 steps)" and len(smooth.get_xdata()) == 300 - 6 + 1
    assert list(test.get_xdata()) == [100, 200, 300]
    assert [top.get_xlabel() for ax in (loss, acc) for top in ax.child_axes] == ["epoch", "epoch"]  # the top axes


def test_plot_curves_skips_missing_test_values(tmp_path):
    fig = plot_curves(history(4, with_gaps=True), tmp_path / "sub" / "curves.png")
    assert_png(tmp_path / "sub" / "curves.png")
    loss, acc = fig.axes
    assert list(loss.lines[0].get_xdata()) == [1, 2, 3, 4]  # train loss every epoch
    assert list(loss.lines[1].get_xdata()) == [2, 4] and list(acc.lines[1].get_xdata()) == [2, 4]


def test_plot_confusion(tmp_path):
    cm = np.arange(100).reshape(10, 10)
    fig = plot_confusion(cm, [str(i) for i in range(10)], tmp_path / "cm.png")
    assert_png(tmp_path / "cm.png", size=(750, 650))
    ax = fig.axes[0]  # the other is the colour bar
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("predicted", "true", "Confusion matrix")
    assert np.array_equal(ax.images[0].get_array(), cm)
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(i) for i in range(10)]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(cells) == 99  # every non-zero count written in its cell (row, column) ...
    assert cells[(3, 7)].get_text() == "37" and (0, 0) not in cells
    assert cells[(9, 9)].get_color() == "white" and cells[(0, 1)].get_color() == "black"  # ... legible on its shade
    names = ["airplane", "automobile", "bird"]
    fig = plot_confusion([[5, 1, 0], [0, 3, 2], [0, 0, 0]], names, tmp_path / "cm3.png")
    assert_png(tmp_path / "cm3.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert all(t.get_rotation() == 45 for t in ax.get_xticklabels())  # long names slanted
    assert sorted(t.get_text() for t in ax.texts) == ["1", "2", "3", "5"]


def test_plot_bars(tmp_path):
    table = {"mlp": {"normal": 0.9, "permuted": 0.89}, "cnn-small": {"normal": 0.95, "permuted": 0.8}}
    fig = plot_bars(table, tmp_path / "bars.png", title="t")
    assert_png(tmp_path / "bars.png", size=(560, 380))
    ax = fig.axes[0]
    assert ax.get_title() == "t" and ax.get_ylabel() == "accuracy" and ax.get_ylim() == (0, 1.3)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mlp", "cnn-small"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["normal", "permuted"]
    heights = [round(bar.get_height(), 6) for bar in ax.patches]  # the bars of "normal", then of "permuted"
    assert heights == [0.9, 0.95, 0.89, 0.8]
    assert sorted(t.get_text() for t in ax.texts) == ["0.800", "0.890", "0.900", "0.950"]


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid(tmp_path, channels):
    images = torch.randint(0, 256, (23, channels, 28, 28), dtype=torch.uint8)
    path = save_image_grid(
        images, [f"{i}" for i in range(23)], tmp_path / "g.png", ncols=10, title="grid", title_colors=["red"] * 23
    )
    assert_png(path, size=(1120, 415))  # 10 columns and 3 rows of 1.1 x 1.25 inches, and the title
    fig = image_grid(images, [f"{i}" for i in range(23)], ncols=10, title="grid")
    assert len(fig.axes) == 30 and fig.get_suptitle() == "grid"
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == [f"{i}" for i in range(23)]  # the 7 cells past the last are empty
    first = shown[0].images[0].get_array()
    expected = images[0, 0] if channels == 1 else images[0].permute(1, 2, 0)
    assert np.array_equal(np.asarray(first), expected.numpy())  # each image drawn as given


def test_image_grid_edge_cases(tmp_path):
    one = save_image_grid(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), ["x"], tmp_path / "one.png")
    assert_png(one, (50, 50))
    none = image_grid(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), [], tmp_path / "none.png")
    assert_png(tmp_path / "none.png", (50, 50))
    assert [t.get_text() for t in none.axes[0].texts] == ["(no images)"]
    with pytest.raises(ValueError):
        save_image_grid(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), ["only one"], tmp_path / "bad.png")


def test_plots_return_figures_and_save_only_when_given_a_path(tmp_path):
    from matplotlib.figure import Figure

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
