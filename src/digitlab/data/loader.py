"""Batches, normalisation and augmentation on whole uint8 tensors, on their own device.

No DataLoader, no per-image Python: a batch is an index slice, normalisation is one fused
multiply-add, and every augmentation draws its random numbers for the whole batch at once
(airbench's approach). Random numbers come from a CPU ``torch.Generator`` so a seed gives
the same batches on every device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache

import torch
import torch.nn.functional as F

from digitlab.errors import unknown_name

AUGMENTATIONS = ("none", "shift", "crop-flip", "flip-translate", "robust", "styles")
ALTERNATING_FLIP = ("flip-translate",)  # the kinds whose mirror follows alternating_flip in training
# Not the 8x8 digits: a 2-px shift moves a quarter of the image, and costs accuracy there (BENCHMARKS.md)
DEFAULT_AUGMENT = {"mnist": "shift", "cifar10": "crop-flip"}

SHIFT_PX = 2  # MNIST: +-2 px keeps every digit inside the frame
CROP_PAD = 4  # CIFAR-10: the standard 4-px padded random crop
TRANSLATE_PAD = 2  # CIFAR-10, airbench's: +-2 px with mirrored borders (a 4-px crop costs the fast nets accuracy)
# robust (real handwriting): ranges of the random affine transform
ROTATE_DEG = 12.0
SCALE = (0.85, 1.15)
SHEAR = 0.2
TRANSLATE_PX = 3.0
ELASTIC_PX = 1.5  # largest displacement of the smooth random warp (pixels at 28 px): wobbly strokes
ELASTIC_GRID = 4  # the warp's control points per side, interpolated smoothly between


def default_augment(dataset_name: str) -> str:
    """The augmentation a dataset trains with by default: MNIST shifts, CIFAR-10 crops and flips."""
    return DEFAULT_AUGMENT.get(dataset_name, "none")


def batch_indices(
    n: int,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """Yield shuffled index batches into ``n`` examples, from a permutation drawn from ``generator``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    stop = n - n % batch_size if drop_last else n
    gen_device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(n, generator=generator, device=gen_device).to(device)
    for i in range(0, stop, batch_size):
        yield perm[i : i + batch_size]


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x[idx], y[idx])`` batches; shuffled with a permutation drawn from ``generator``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not shuffle:  # plain slices: views, no copy
        stop = x.shape[0] - x.shape[0] % batch_size if drop_last else x.shape[0]
        for i in range(0, stop, batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    for idx in batch_indices(x.shape[0], batch_size, generator=generator, drop_last=drop_last, device=x.device):
        yield x[idx], y[idx.to(y.device)]


def alternating_flip(index: torch.Tensor, epoch: int, seed: int) -> torch.Tensor:
    """airbench's mirror schedule: a fixed coin per training image (from its index and the seed) says
    whether it is mirrored in even epochs, and odd epochs mirror the opposite set, so every two epochs
    show each image both ways round (random mirroring leaves a quarter of them one way for two epochs).

    Returns a bool mask (N,) for the images at ``index`` (positions in the training set).
    """
    mask = 0xFFFFFFFF  # a 32-bit integer hash (lowbias32's rounds): neighbouring indices get unrelated coins
    h = (index.long() * 0x9E3779B1 + seed * 0x85EBCA77) & mask
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        h = ((h ^ (h >> shift)) * multiplier) & mask
    return ((h ^ (h >> 16)) & 1).bool() ^ bool(epoch % 2)


@lru_cache(maxsize=32)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, dtype: torch.dtype):
    # (x / 255 - mean) / std == x * scale + shift; computed once per (stats, device, dtype).
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * s)).to(device=device, dtype=dtype).view(-1, 1, 1)
    shift = (-m / s).to(device=device, dtype=dtype).view(-1, 1, 1)
    return scale, shift


def normalize(
    x: torch.Tensor, mean: tuple[float, ...] | list[float], std: tuple[float, ...] | list[float], dtype=torch.float32
) -> torch.Tensor:
    """uint8 (N, C, H, W) or (C, H, W) to ``(x / 255 - mean) / std`` per channel, as ``dtype``."""
    scale, shift = _affine(tuple(map(float, mean)), tuple(map(float, std)), x.device, dtype)
    return torch.addcmul(shift, x.to(dtype), scale)


def _randint(low: int, high: int, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """n integers in [low, high] drawn on the generator's device, moved to ``device``."""
    gen_device = generator.device if generator is not None else "cpu"
    return torch.randint(low, high + 1, (n,), generator=generator, device=gen_device).to(device)


def _uniform(low: float, high: float, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else "cpu"
    u = torch.rand(n, generator=generator, device=gen_device, dtype=torch.float32).to(device)
    return low + (high - low) * u


def translate(
    x: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    pad: int,
    flip: torch.Tensor | None = None,
    mode: str = "constant",
):
    """Move image i by (dy[i], dx[i]) pixels (|d| <= pad), optionally mirrored; the border is zeros
    (``mode="constant"``) or the image mirrored (``"reflect"``).

    Two gathers on a padded copy: rows, then columns; no loop over images.
    """
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode)  # (N, C, H+2p, W+2p)
    rows = torch.arange(h, device=x.device).unsqueeze(0) - dy.unsqueeze(1) + pad  # (N, H)
    cols = torch.arange(w, device=x.device).unsqueeze(0)  # (1, W)
    if flip is not None:
        cols = torch.where(flip.unsqueeze(1), (w - 1) - cols, cols)  # (N, W)
    cols = cols - dx.unsqueeze(1) + pad  # (N, W); the flip happens after the shift
    out = xp.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * pad))  # (N, C, H, W+2p)
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))  # (N, C, H, W)


def random_shift(x: torch.Tensor, generator: torch.Generator | None, max_shift: int | None = None) -> torch.Tensor:
    """Random integer translation per image, up to ``max_shift`` px (default 2 at 28 px, scaled for small images)."""
    if max_shift is None:
        max_shift = max(1, round(SHIFT_PX * x.shape[-1] / 28)) if x.shape[-1] < 28 else SHIFT_PX
    n = x.shape[0]
    dy = _randint(-max_shift, max_shift, n, generator, x.device)
    dx = _randint(-max_shift, max_shift, n, generator, x.device)
    return translate(x, dy, dx, max_shift)


def random_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator | None,
    pad: int = CROP_PAD,
    mode: str = "constant",
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random crop of the padded image (a translation up to ``pad`` px) and a horizontal flip, random unless
    ``flip`` (N,) is given; the border is zeros, or the image mirrored with ``mode="reflect"`` (airbench's
    ``flip-translate``)."""
    n = x.shape[0]
    dy = _randint(-pad, pad, n, generator, x.device)
    dx = _randint(-pad, pad, n, generator, x.device)
    if flip is None:
        flip = _randint(0, 1, n, generator, x.device).bool()
    return translate(x, dy, dx, pad, flip, mode=mode)


def stroke_width(x: torch.Tensor, grow: bool) -> torch.Tensor:
    """Strokes one pixel thicker (2x2 max filter, grow=True) or thinner (2x2 min filter).

    2x2, not 3x3: a 3x3 erosion keeps only ~18% of an MNIST digit's ink (strokes are 2-3 px
    wide) and erases many digits; 2x2 changes the width by one pixel (ink x1.5 / x0.5).
    The half-pixel offset it adds is lost in the random translation that follows.
    """
    op, fill = (torch.maximum, 0.0) if grow else (torch.minimum, 255.0)
    p = F.pad(x, (0, 1, 0, 1), value=fill)  # (N, C, H+1, W+1)
    r = op(p[..., :-1], p[..., 1:])  # (N, C, H+1, W)
    return op(r[..., :-1, :], r[..., 1:, :])  # (N, C, H, W)


def _identity_grid(h: int, w: int, device) -> torch.Tensor:
    """Pixel-centre coordinates in [-1, 1] (align_corners=False), as (1, H*W, 2) of (x, y)."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) * 2 + 1) / w - 1
    return torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)], -1).view(1, h * w, 2)


def elastic_field(n: int, h: int, w: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """A smooth random displacement per image, (N, H, W, 2) in grid units (x, y), at most ELASTIC_PX.

    Simard et al.'s elastic distortion, cheaply: random offsets on a coarse grid of control
    points, upsampled bicubically, so strokes bend the way a hand wavers instead of moving
    as a whole.
    """
    coarse = _uniform(-1.0, 1.0, n * 2 * ELASTIC_GRID**2, generator, device).view(n, 2, ELASTIC_GRID, ELASTIC_GRID)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True).clamp_(-1.0, 1.0)  # (N, 2, H, W)
    scale = torch.tensor([2.0 * ELASTIC_PX / w, 2.0 * ELASTIC_PX / h], device=device).view(1, 2, 1, 1)
    return (field * scale).permute(0, 2, 3, 1)  # (N, H, W, 2)


def random_affine_thickness(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Real handwriting: thicker or thinner strokes, a smooth random warp, then a random
    rotation, scale, shear and shift (one resampling for all of them)."""
    n, _, h, w = x.shape
    dev = x.device
    angle = _uniform(-ROTATE_DEG, ROTATE_DEG, n, generator, dev) * (math.pi / 180)
    scale = _uniform(*SCALE, n, generator, dev)
    shear = _uniform(-SHEAR, SHEAR, n, generator, dev)
    tx = _uniform(-TRANSLATE_PX, TRANSLATE_PX, n, generator, dev) * (2.0 / w)  # pixels -> [-1, 1] units
    ty = _uniform(-TRANSLATE_PX, TRANSLATE_PX, n, generator, dev) * (2.0 / h)
    stroke = _randint(0, 2, n, generator, dev)  # 0 keep, 1 dilate, 2 erode (a third each)

    xf = x.float()
    dil, ero = stroke == 1, stroke == 2
    if dil.any():  # only the chosen images: a third of the work each
        xf[dil] = stroke_width(xf[dil], grow=True)
    if ero.any():
        xf[ero] = stroke_width(xf[ero], grow=False)

    # Forward map M = rotation @ shear * scale; grid_sample wants output -> input, i.e. M^-1,
    # written out for 2x2 matrices (cheaper than linalg.inv on a batch).
    cos, sin = torch.cos(angle), torch.sin(angle)
    a, b = cos * scale, (cos * shear - sin) * scale
    c, d = sin * scale, (sin * shear + cos) * scale
    det = a * d - b * c
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det.view(n, 1, 1)  # (N, 2, 2)
    offset = -(inv @ torch.stack([tx, ty], -1).unsqueeze(-1)).transpose(1, 2)  # (N, 1, 2)
    # grid = base @ inv^T + offset: the same as F.affine_grid, in one batched matmul.
    grid = torch.baddbmm(offset, _identity_grid(h, w, dev).expand(n, -1, -1), inv.transpose(1, 2))
    grid = grid.view(n, h, w, 2) + elastic_field(n, h, w, generator, dev)
    out = F.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def augment(
    x: torch.Tensor,
    kind: str,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Augment a uint8 batch (N, C, H, W) on its device; returns uint8 of the same shape.

    Args:
        x: uint8 images (N, C, H, W).
        kind: ``none``, ``shift`` (+-2 px), ``crop-flip`` (4-px padded crop + mirror), ``flip-translate``
            (+-2 px with mirrored borders + mirror, airbench's), ``robust``
            (affine + stroke thickness, for real handwriting), ``styles`` (other people's writing:
            stroke width, aspect ratio, slant, bitmaps, low resolution; see ``digitlab.data.styles``).
        generator: source of randomness (a seeded CPU generator makes it reproducible).
        labels: the batch's digit classes (N,); ``styles`` uses them for styles of one digit (the
            continental 1), the other kinds ignore them. Never changed.
        flip: which images ``flip-translate`` mirrors (N,) bool, e.g. ``alternating_flip``'s; None: at random.
    """
    if kind == "none":
        return x
    if kind == "shift":
        return random_shift(x, generator)
    if kind == "crop-flip":
        return random_crop_flip(x, generator)
    if kind == "flip-translate":
        return random_crop_flip(x, generator, TRANSLATE_PAD, mode="reflect", flip=flip)
    if kind == "robust":
        return random_affine_thickness(x, generator)
    if kind == "styles":
        from digitlab.data.styles import random_styles  # one module per job: the loader stays small

        return random_styles(x, generator, labels)
    raise unknown_name("augmentation", kind, list(AUGMENTATIONS))
