"""A grid of small images with a caption over each: samples, errors, predictions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # the object API: no pyplot global state, no GUI backend


def save_image_grid(
    images: torch.Tensor,
    titles: list[str],
    path: str | Path,
    ncols: int = 10,
    title: str | None = None,
    title_colors: list[str] | None = None,
) -> Path:
    """Save uint8 images as a compact grid PNG and return the path written (see ``image_grid``)."""
    image_grid(images, titles, path, ncols=ncols, title=title, title_colors=title_colors)
    return Path(path)


def image_grid(
    images: torch.Tensor,
    titles: list[str],
    path: str | Path | None = None,
    *,
    ncols: int = 10,
    title: str | None = None,
    title_colors: list[str] | None = None,
) -> Figure:
    """Draw uint8 images as a compact grid; return the figure (a notebook shows it), saved when given a path.

    Args:
        images: uint8 (N, C, H, W) with C = 1 (drawn in gray) or 3; (N, H, W) is taken as gray.
        titles: one short caption per image (may be empty strings).
        path: where to write the PNG (parent folders are created); None: only return the figure.
        ncols: images per row (fewer if there are fewer images).
        title: optional title over the whole figure.
        title_colors: optional matplotlib colour per caption (e.g. "red" for errors).
    """
    images = torch.as_tensor(images).detach().cpu()
    if images.dim() == 3:  # (N, H, W) -> (N, 1, H, W)
        images = images[:, None]
    n = int(images.shape[0])
    if len(titles) != n:
        raise ValueError(f"{n} images but {len(titles)} titles")
    if title_colors is not None and len(title_colors) != n:
        raise ValueError(f"{n} images but {len(title_colors)} title colours")

    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(1.1 * ncols + 0.2, 1.25 * nrows + (0.4 if title else 0.1)), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].numpy()
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(np.transpose(img, (1, 2, 0)).astype(np.uint8), interpolation="nearest")
        color = title_colors[i] if title_colors is not None else "black"
        ax.set_title(titles[i], fontsize=7, color=color, pad=2)
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "(no images)", ha="center", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.3)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig
