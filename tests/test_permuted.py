"""Seed 002's shuffled-pixel experiment: the permutation, the table, the CLI, and the result on real MNIST."""

from __future__ import annotations

import json
import statistics

import torch
from PIL import Image

import digitlab.data
from digitlab.cli import main
from digitlab.data.base import ImageData
from digitlab.experiments.permuted import (
    matched_hidden,
    permute_pixels,
    permuted_table,
    pixel_permutation,
    run_permuted,
    run_permuted_seeds,
    shuffled_examples,
)
from digitlab.models import create_model


def blobs(n_train: int = 240, n_test: int = 60, size: int = 16, channels: int = 1) -> ImageData:
    """Four classes: a bright 5x5 blob in one quadrant, on noise."""
    g = torch.Generator().manual_seed(0)

    def make(n):
        y = torch.randint(0, 4, (n,), generator=g)
        x = torch.randint(0, 80, (n, channels, size, size), generator=g, dtype=torch.uint8)
        h = size // 2
        for i, c in enumerate(y.tolist()):
            r, col = (c // 2) * h + 1, (c % 2) * h + 1
            x[i, :, r : r + 5, col : col + 5] = 255
        return x, y

    (trx, tr_y), (tex, tey) = make(n_train), make(n_test)
    return ImageData("blobs", trx, tr_y, tex, tey, ["tl", "tr", "bl", "br"], (0.3,) * channels, (0.3,) * channels)


def test_permute_pixels_is_one_fixed_permutation():
    x = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    p = permute_pixels(x, perm)
    assert p.shape == x.shape and p.dtype == torch.uint8
    # Every image and channel is rearranged the same way, and the inverse undoes it.
    assert torch.equal(p.flatten(2), x.flatten(2)[:, :, perm])
    assert torch.equal(permute_pixels(p, torch.argsort(perm)), x)


def test_matched_hidden_reproduces_seed_002():
    cnn = sum(p.numel() for p in create_model("cnn-small").parameters())
    assert cnn == 6422
    assert matched_hidden(784, 10, cnn) == 8  # seed 002's n_hidden


def test_run_permuted_table():
    result = run_permuted(blobs(), epochs=1, seed=0, device="cpu")
    assert set(result["table"]) == {"mlp", "cnn-small"}
    for row in result["table"].values():
        assert set(row) == {"normal", "permuted"}
        assert all(0.0 <= acc <= 1.0 for acc in row.values())
    assert result["params"]["cnn-small"] == sum(
        p.numel() for p in create_model("cnn-small", num_classes=4, image_size=16).parameters()
    )
    # The mlp width is chosen so both models have about the same number of parameters.
    assert abs(result["params"]["mlp"] - result["params"]["cnn-small"]) < 0.1 * result["params"]["cnn-small"]
    assert result["n_train"] == 240 and result["n_test"] == 60
    json.dumps(result)  # saved as permuted.json


def test_run_permuted_is_reproducible():
    data = blobs(n_train=64, n_test=32)
    a = run_permuted(data, seed=3, device="cpu")["table"]
    b = run_permuted(data, seed=3, device="cpu")["table"]
    assert a == b


def test_cli_experiment_permuted(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(digitlab.data, "load_dataset", lambda name, data_dir=None, download=True: blobs())
    assert main(["experiment", "permuted", "--out", str(tmp_path), "--limit-train", "100", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "mlp" in out and "cnn-small" in out and "permuted" in out
    saved = json.loads((tmp_path / "permuted.json").read_text())
    assert saved["n_train"] == 100 and set(saved["table"]) == {"mlp", "cnn-small"}
    with Image.open(tmp_path / "permuted.png") as im:
        assert im.format == "PNG"


def test_run_permuted_seeds_mean_and_spread():
    data = blobs(n_train=64, n_test=32)
    result = run_permuted_seeds(data, seeds=[0, 1, 2], device="cpu")
    assert result["seeds"] == [0, 1, 2] and set(result["per_seed"]) == {"0", "1", "2"}
    assert result["per_seed"]["1"] == run_permuted(data, seed=1, device="cpu")["table"]  # each seed is a full run
    for model in ("mlp", "cnn-small"):
        for cond in ("normal", "permuted"):
            cells = [result["per_seed"][s][model][cond] for s in ("0", "1", "2")]
            assert result["table"][model][cond] == statistics.fmean(cells)
            assert result["std"][model][cond] == statistics.stdev(cells)
    text = str(permuted_table(result))
    assert "mean ± std" in text and "±" in text.splitlines()[-1]
    assert "<table>" in permuted_table(result)._repr_html_()
    json.dumps(result)


def test_shuffled_examples_show_the_permutation():
    data = blobs(n_train=8, n_test=12)
    images, titles = shuffled_examples(data, seed=4, n=5)
    assert images.shape == (10, 1, 16, 16) and len(titles) == 10
    assert torch.equal(images[:5], data.test_x[:5])
    assert torch.equal(images[5:], permute_pixels(data.test_x[:5], pixel_permutation(16, 4)))
    assert titles[0] == data.classes[int(data.test_y[0])] and titles[5].endswith("shuffled")


def test_cli_experiment_permuted_over_seeds(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(digitlab.data, "load_dataset", lambda name, data_dir=None, download=True: blobs(64, 32))
    assert main(["experiment", "permuted", "--out", str(tmp_path), "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "8 runs" in out and "±" in out
    saved = json.loads((tmp_path / "permuted.json").read_text())
    assert saved["seeds"] == [0, 1] and set(saved["std"]) == {"mlp", "cnn-small"}
    for name in ("permuted.png", "permuted_samples.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG"
    assert main(["experiment", "permuted", "--out", str(tmp_path), "--seeds", "0,x"]) == 2


def test_cli_rejects_too_small_images(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(digitlab.data, "load_dataset", lambda name, data_dir=None, download=True: blobs(size=8))
    assert main(["experiment", "permuted", "--out", str(tmp_path)]) == 2
    assert "at least 16x16" in capsys.readouterr().err


def test_cnn_beats_mlp_on_real_mnist(mnist_dir):
    """Seed 002's first finding, on a 3,000-image subset (a higher lr makes up for fewer steps)."""
    data = digitlab.data.load_dataset("mnist", mnist_dir, download=False, progress=False).subset(3000, 1000)
    result = run_permuted(data, epochs=2, lr=0.05, seed=0, device="cpu")
    table = result["table"]
    assert result["params"] == {"mlp": 6442, "cnn-small": 6422}
    assert table["cnn-small"]["normal"] > table["mlp"]["normal"]
    # Shuffling costs the CNN much more than the MLP.
    cnn_drop = table["cnn-small"]["normal"] - table["cnn-small"]["permuted"]
    mlp_drop = table["mlp"]["normal"] - table["mlp"]["permuted"]
    assert cnn_drop > mlp_drop
    print(table)
