"""What the network learned (evaluate/inspect.py, `digitlab inspect`, `predict --explain`): the figures' contents."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from digitlab.cli import main
from digitlab.engine.checkpoint import FORMAT_VERSION, save_checkpoint
from digitlab.errors import DigitlabError
from digitlab.evaluate.inspect import (
    _kernel_images,
    conv_layers,
    feature_maps,
    feature_maps_figure,
    filters_figure,
    model_input,
    mosaic,
    saliency,
)
from digitlab.inference.predictor import Predictor
from digitlab.inference.preprocess import preprocess_digits
from digitlab.models import create_model


def seven(size: int = 100) -> Image.Image:
    img = Image.new("L", (size, size), 255)
    ImageDraw.Draw(img).line([(30, 20), (70, 20), (45, 85)], fill=0, width=8)
    return img


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float32)


def image_axes(fig) -> list:
    return [ax for ax in fig.get_axes() if ax.images]


def test_mosaic_tiles_and_gaps():
    tiles = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    m = mosaic(tiles, cols=3)
    assert m.shape == (2 * 2 + 1, 3 * 3 + 2)
    assert np.array_equal(m[0:2, 4:7], tiles[1]) and np.array_equal(m[3:5, 0:3], tiles[3])
    assert np.isnan(m[2]).all() and np.isnan(m[:, 3]).all()  # the gaps
    assert np.isnan(m[3:5, 8:11]).all()  # the sixth place has no tile


def test_filters_figure_draws_every_conv_layers_kernels(tmp_path):
    torch.manual_seed(0)
    model = create_model("cnn")  # conv 1->32 3x3, conv 32->64 3x3
    fig = filters_figure(model, tmp_path / "filters.png")
    axes = image_axes(fig)
    assert len(axes) == len(conv_layers(model)) == 2  # one grid per layer
    assert "32 kernels 3x3 (1 input channel)" in axes[0].get_title()
    assert "64 kernels 3x3 (mean over 32 input channels)" in axes[1].get_title()
    # the first grid is conv1's own weights, each scaled to its range
    shown = np.asarray(axes[0].images[0].get_array())
    tiles, _ = _kernel_images(model.features[0], 64)
    assert np.allclose(np.nan_to_num(shown, nan=-1), np.nan_to_num(mosaic(tiles, 6), nan=-1))
    w = model.features[0].weight[3, 0].detach()
    assert np.allclose(tiles[3], ((w - w.min()) / (w.max() - w.min())).numpy(), atol=1e-6)
    image = png(tmp_path / "filters.png")
    w_in, h_in = fig.get_size_inches() * fig.dpi
    assert image.shape[:2] == (round(h_in), round(w_in))
    assert image.std() > 20  # kernels drawn, not a blank page


def test_filters_of_an_rgb_layer_are_colour_patches():
    fig = filters_figure(create_model("cifar-net"))
    first = image_axes(fig)[0]
    assert "6 kernels 5x5 (RGB)" in first.get_title() and np.asarray(first.images[0].get_array()).ndim == 3


def test_a_model_without_convs_is_a_clear_error():
    with pytest.raises(DigitlabError, match="no convolutional layers"):
        filters_figure(create_model("mlp"))


def test_feature_maps_are_each_conv_layers_output_in_order(tmp_path):
    torch.manual_seed(0)
    model = create_model("cnn-k").eval()  # conv1 -> (32, 26, 26), pool, conv2 -> (64, 11, 11)
    x = torch.randn(1, 1, 28, 28)
    maps = feature_maps(model, x)
    assert [(n, tuple(m.shape)) for n, m in maps] == [("features.0", (32, 26, 26)), ("features.3", (64, 11, 11))]
    with torch.no_grad():
        assert torch.allclose(maps[0][1], model.features[0](x)[0])
    fig = feature_maps_figure(model, x, np.zeros((28, 28), np.uint8), tmp_path / "fm.png", max_maps=8, title="t")
    axes = image_axes(fig)
    assert len(axes) == 3  # the input, then one row per conv layer
    assert "features.3: 64 maps 11x11 (8 most active)" in axes[2].get_title()
    assert np.asarray(axes[2].images[0].get_array()).shape == (11, 8 * 12 - 1)  # 8 maps side by side
    assert png(tmp_path / "fm.png").std() > 20


def test_model_input_is_predicts_preprocessing():
    predictor = Predictor.load()
    x, image, answer = model_input(predictor, seven())
    found = preprocess_digits(seven(), mean=predictor.mean, std=predictor.std, multi=False, image_size=28)
    assert torch.allclose(x, found.tensor[:1], atol=1e-6) and np.array_equal(image, found.digits[0].image)
    assert answer.startswith("7 (")
    with pytest.raises(DigitlabError, match="no digit found"):
        model_input(predictor, Image.new("L", (50, 50), 255))


def test_input_gradients_point_at_the_pixel_that_decides():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2, bias=False))  # no conv layer: input gradients
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1, 5 * 8 + 3] = 2.0  # class 1 reads pixel (5, 3) only
    heat, method = saliency(model, torch.rand(1, 1, 8, 8), 1)
    assert method == "input gradient" and heat.shape == (8, 8)
    assert np.unravel_index(heat.argmax(), heat.shape) == (5, 3) and heat.sum() == pytest.approx(1.0)


def test_grad_cam_lights_up_where_the_evidence_is():
    class Blobby(nn.Module):  # the class-1 logit sums a 1x1 conv's positive response over the image
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.relu = nn.ReLU(inplace=True)  # in place, as fast's are: saliency must still see the conv output

        def forward(self, x):
            s = self.relu(self.conv(x)).sum((1, 2, 3))
            return torch.stack([-s, s], 1)

    model = Blobby()
    with torch.no_grad():
        model.conv.weight.fill_(1.0), model.conv.bias.zero_()
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 10:14, 2:6] = 1.0  # evidence in the lower left
    heat, method = saliency(model, x, 1)
    assert method == "Grad-CAM" and heat.shape == (16, 16) and heat.max() == pytest.approx(1.0)
    assert heat[10:14, 2:6].mean() > 0.9 and heat[:6, 10:].max() < 0.05
    assert model.relu.inplace  # the caller's model is not changed
    none, _ = saliency(model, x, 0)  # no evidence for class 0: an empty map
    assert float(none.max()) == 0.0


def _tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("cnn-small")
    ckpt = {
        "digitlab": FORMAT_VERSION,
        "model_name": "cnn-small",
        "model_args": {"num_classes": 10, "in_channels": 1, "image_size": 28},
        "state_dict": model.state_dict(),
        "dataset": "mnist",
        "task": "digits",
        "classes": [str(i) for i in range(10)],
        "channels": 1,
        "image_size": 28,
        "mean": [0.1307],
        "std": [0.3081],
    }
    run = tmp_path / "run"
    save_checkpoint(run / "best.pt", ckpt)
    return run


def test_cli_inspect_writes_both_figures_into_the_run(tmp_path, capsys):
    run = _tiny_checkpoint(tmp_path)
    seven().save(tmp_path / "seven.png")
    assert main(["inspect", str(run), "--filters", "--feature-maps", str(tmp_path / "seven.png")]) == 0
    out = capsys.readouterr().out
    assert str(run / "filters.png") in out and str(run / "feature_maps.png") in out
    for name in ("filters.png", "feature_maps.png"):
        image = png(run / name)
        assert image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 20
    assert main(["inspect", str(run)]) == 2
    assert "--filters, --feature-maps IMAGE" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "model.onnx"), "--filters"]) == 2
    assert "not an ONNX file" in capsys.readouterr().err


def test_predict_explain_adds_where_the_model_looked(tmp_path, capsys):
    seven().save(tmp_path / "seven.png")
    out = tmp_path / "why.png"
    assert main(["predict", str(tmp_path / "seven.png"), "--explain", str(out)]) == 0
    image = png(out)
    assert image.shape[0] == 780  # three rows of 2.6 inches at 100 dpi: inputs, probabilities, saliency
    heat_row = image[540:, 260:]
    assert (heat_row[..., 0] - heat_row[..., 2]).max() > 100  # a red-hot spot of the jet colour map
