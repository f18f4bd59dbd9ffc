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
    assert plot_curves(history(), tmp_path / "curves.png") == tmp_path / "curves.png"
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
