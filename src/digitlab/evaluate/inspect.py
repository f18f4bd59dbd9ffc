"""What a trained network learned: its conv kernels, one image's feature maps, and where it looked.

The tutorials explain kernels (small learned stencils), feature maps (where each kernel fires)
and locality, but cannot show them. ``filters_figure`` draws every conv layer's kernels,
``feature_maps_figure`` one image's conv outputs layer by layer, and ``saliency`` a heat map of
the input pixels that decided the answer (Grad-CAM on the last conv layer with a spatial map,
input gradients for a model without one). Each figure function returns a matplotlib ``Figure``
(a notebook shows it) and writes a PNG when given a path, like ``evaluate.plots``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from digitlab.errors import DigitlabError
from digitlab.inference.predictor import Predictor
from digitlab.inference.preprocess import normalize

MAX_PANELS = 64  # kernels or maps drawn per layer (the rest would be too small to see)


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every ``nn.Conv2d`` in forward-registration order, with its module name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _require_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    convs = conv_layers(model)
    if not convs:
        raise DigitlabError("this model has no convolutional layers (an MLP): there are no kernels or feature maps")
    return convs


def _grid(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig


def _kernel_images(conv: nn.Conv2d, limit: int) -> tuple[np.ndarray, str]:
    """(n, kh, kw) or (n, kh, kw, 3) arrays scaled to [0, 1] for display, and how they were made."""
    w = conv.weight.detach().float().cpu()[:limit]  # (out, in/groups, kh, kw)
    if w.shape[1] == 3:  # an RGB input layer: the kernel as a colour patch
        w = w.permute(0, 2, 3, 1)
        how = "RGB"
    elif w.shape[1] == 1:
        w = w[:, 0]
        how = "1 input channel"
    else:  # deeper layers: what the kernel does on average over its inputs
        w = w.mean(1)
        how = f"mean over {conv.weight.shape[1]} input channels"
    lo = w.flatten(1).min(1).values.view(-1, *[1] * (w.dim() - 1))
    hi = w.flatten(1).max(1).values.view(-1, *[1] * (w.dim() - 1))
    return ((w - lo) / (hi - lo).clamp_min(1e-12)).numpy(), how


def mosaic(images: np.ndarray, cols: int, gap: int = 1) -> np.ndarray:
    """``(n, h, w)`` or ``(n, h, w, 3)`` tiles in one array, ``cols`` to a row, NaN (drawn as white) between them."""
    n, h, w = images.shape[:3]
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *images.shape[3:]), np.nan, dtype=np.float32)
    for i, tile in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return out


def _show(ax, tiles: np.ndarray, cols: int, cmap: str) -> None:
    image = mosaic(tiles, cols)
    if image.ndim == 3:  # RGB: NaN gaps as white
        image = np.nan_to_num(image, nan=1.0)
    ax.imshow(image, cmap=cmap, interpolation="nearest")
    ax.set_axis_off()


def filters_figure(model: nn.Module, path: str | Path | None = None, *, max_filters: int = MAX_PANELS) -> Figure:
    """Each conv layer's kernels as one grid of small images (one panel per layer, top to bottom).

    Each kernel is scaled to its own min..max (dark: negative weights, light: positive).

    Args:
        model: any model with ``nn.Conv2d`` layers.
        path: PNG to write; None: only return the figure.
        max_filters: kernels drawn per layer.
    """
    convs = _require_convs(model)
    cols = [_grid(min(c.out_channels, max_filters))[1] for _, c in convs]
    rows = [math.ceil(min(c.out_channels, max_filters) / k) for (_, c), k in zip(convs, cols, strict=True)]
    fig = Figure(figsize=(6, min(1.0 + sum(0.6 + 4.5 * r / k for r, k in zip(rows, cols, strict=True)), 40)), dpi=100)
    axes = fig.subplots(
        len(convs), 1, squeeze=False, height_ratios=[0.3 + r / k for r, k in zip(rows, cols, strict=True)]
    )
    for ax, (name, conv), k in zip(axes[:, 0], convs, cols, strict=True):
        tiles, how = _kernel_images(conv, max_filters)
        kh, kw = conv.kernel_size
        shown = "" if conv.out_channels <= max_filters else f", first {max_filters}"
        _show(ax, tiles, k, "gray")
        ax.set_title(f"{name}: {conv.out_channels} kernels {kh}x{kw} ({how}{shown})", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Each conv layer's output for a batch of one, in the order the forward pass runs them: (name, (C, H, W))."""
    convs = _require_convs(model)
    found: list[tuple[str, torch.Tensor]] = []
    hooks = [
        conv.register_forward_hook(lambda m, args, out, name=name: found.append((name, out[0].detach().float().cpu())))
        for name, conv in convs
    ]
    try:
        model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return found


def feature_maps_figure(
    model: nn.Module,
    x: torch.Tensor,
    input_image: np.ndarray,
    path: str | Path | None = None,
    *,
    max_maps: int = 16,
    title: str = "",
) -> Figure:
    """One image's feature maps layer by layer: the model input, then each conv layer's output maps.

    Args:
        model: the network, in eval mode.
        x: the model input for one image, ``(1, C, H, W)``, preprocessed as ``predict`` does.
        input_image: the same input as uint8 ``(H, W)`` or ``(H, W, 3)`` (what the model saw).
        path: PNG to write; None: only return the figure.
        max_maps: maps drawn per layer (the most active ones first).
        title: shown above the figure (e.g. the file and the model's answer).
    """
    maps = feature_maps(model, x)
    fig = Figure(figsize=(10, 1.6 * (1 + len(maps)) + 0.4), dpi=100)
    axes = fig.subplots(1 + len(maps), 1, squeeze=False)[:, 0]
    if title:
        fig.suptitle(title, fontsize=10)
    axes[0].imshow(input_image, cmap=None if input_image.ndim == 3 else "gray", vmin=0, vmax=255)
    axes[0].set_title(f"model input {input_image.shape[1]}x{input_image.shape[0]}", fontsize=8)
    axes[0].set_axis_off()
    for ax, (name, out) in zip(axes[1:], maps, strict=True):
        order = out.flatten(1).abs().mean(1).argsort(descending=True)[:max_maps]  # the most active first
        c, h, w = out.shape
        tiles = out[order].numpy()
        lo = tiles.reshape(len(tiles), -1).min(1)[:, None, None]
        hi = tiles.reshape(len(tiles), -1).max(1)[:, None, None]
        _show(ax, (tiles - lo) / np.maximum(hi - lo, 1e-12), len(tiles), "viridis")  # each map to its own range
        ax.set_title(f"{name}: {c} maps {h}x{w}" + (f" ({len(order)} most active)" if c > max_maps else ""), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def model_input(predictor: Predictor, image) -> tuple[torch.Tensor, np.ndarray, str]:
    """One image as the model sees it in ``predict`` (read as one digit, or one class), and the answer.

    Returns ``(x (1, C, H, W) normalised, the uint8 input image, "label (probability)")``.
    """
    pred = predictor.predict(image, multi=False)
    if pred.status == "error":
        raise DigitlabError(pred.error or "cannot read the image")
    if not pred.items:
        raise DigitlabError(f"{pred.source}: no digit found")
    item = pred.items[0]
    assert item.input_image is not None  # the predictor keeps every item's model input
    x = normalize(item.input_image, predictor.mean, predictor.std).unsqueeze(0)  # as preprocess_digits does
    return x, item.input_image, f"{item.label} ({item.probability:.1%})"


def _last_spatial_conv(model: nn.Module, x: torch.Tensor) -> nn.Conv2d | None:
    """The last conv layer whose output is still a map (wider than 1x1), or None."""
    maps = dict(feature_maps(model, x)) if conv_layers(model) else {}
    spatial = [conv for name, conv in conv_layers(model) if name in maps and maps[name].shape[-1] > 1]
    return spatial[-1] if spatial else None


def saliency(model: nn.Module, x: torch.Tensor, target: int) -> tuple[np.ndarray, str]:
    """Where the model looked for class ``target``: an (H, W) map in [0, 1] at the input's size, and its method.

    Grad-CAM (Selvaraju et al., 2017) weighs the last spatial conv layer's maps by the gradient of
    the class's logit and keeps the positive part: where evidence *for* the class is. A model
    without such a layer (an MLP) gets the absolute input gradient instead.
    """
    model = copy.deepcopy(model).eval().float()  # a copy whose ReLUs can be made out-of-place:
    for m in model.modules():  # an in-place ReLU would overwrite the conv output Grad-CAM keeps
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x = x.detach().clone().float()
    conv = _last_spatial_conv(model, x)
    if conv is None:
        x.requires_grad_(True)
        with torch.enable_grad():
            model(x)[0, target].backward()
        assert x.grad is not None
        heat = x.grad[0].abs().amax(0)
        method = "input gradient"
    else:
        kept: dict[str, torch.Tensor] = {}

        def keep(module, args, out):
            out.retain_grad()
            kept["maps"] = out

        hook = conv.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                model(x)[0, target].backward()
        finally:
            hook.remove()
        grad = kept["maps"].grad
        assert grad is not None  # retain_grad kept it
        maps, grads = kept["maps"][0], grad[0]  # (C, h, w)
        cam = torch.relu((grads.mean((1, 2), keepdim=True) * maps).sum(0, keepdim=True))
        heat = torch.nn.functional.interpolate(cam[None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        method = "Grad-CAM"
    heat = heat.detach()
    heat = heat / heat.max() if float(heat.max()) > 0 else heat
    return heat.cpu().numpy(), method


def item_saliency(predictor: Predictor, input_image: np.ndarray, index: int) -> tuple[np.ndarray, str] | None:
    """``saliency`` for one item of a prediction (its model input and class); None for an ONNX model (no gradients)."""
    if not isinstance(predictor.model, nn.Module):
        return None
    x = normalize(input_image, predictor.mean, predictor.std).unsqueeze(0)
    return saliency(predictor.model, x.to(predictor.device), index)
