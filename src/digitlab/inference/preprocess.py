"""The one path from any user image to model input.

MNIST digits are white ink on black, size-normalised into a 20x20 box keeping their aspect
ratio, anti-aliased, and centred by centre of mass in a 28x28 field. A phone photo, a scan
or a canvas drawing is none of that, so ``preprocess_digits`` rebuilds it step by step:

1. ``to_grayscale``: any Pillow mode to float gray in [0, 1]; transparency composited.
2. ``has_light_background``: dark ink on light paper, or light on dark? (``surround.paper_on_desk``:
   a sheet on a dark desk that fills the frame is dark ink on paper, the desk painted over.)
3. ``ink_map``: divide out a large-scale background estimate (uneven light, vignetting),
   so ink is 0 on paper and near 1 on strokes whatever the lighting.
4. ``soft_threshold``: Otsu on the ink map, as a ramp so stroke edges keep grey levels;
   a nearly blank image returns None.
5. ``digitlab.inference.segment``: drop specks, find the digits left to right.
6. ``to_mnist``: per digit, even out the stroke width, fit into 20x20 with area averaging,
   paste into 28x28 by centre of mass.

The steps live in ``gray`` (1), ``lighting`` and ``surround`` (2-4), ``segment`` (5) and ``framing`` (6); this module
chains them. The CLI, the web app, evaluation on files and the tests all go through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from digitlab.inference.framing import BOX, SIZE, even_strokes, normalize, normalize_array, to_mnist
from digitlab.inference.gray import to_grayscale
from digitlab.inference.lighting import (
    FLAT_PAPER,
    _grow,
    _resize,
    background,
    has_light_background,
    ink_map,
    otsu,
    soft_threshold,
)
from digitlab.inference.segment import Segment, segment_digits
from digitlab.inference.surround import paper_on_desk

if TYPE_CHECKING:
    import torch

WORK_MAX_SIDE = 1024  # larger images are reduced first: a digit needs no more pixels than this
WORK_MIN_SIDE = 96  # smaller ones are enlarged so the pixel-sized steps below have room (a 20 px
# MNIST digit becomes ~70 px; 256 and 128 read no better, and the web page's 96 px drawings skip a resize)


@dataclass
class Digit:
    """One digit as the model sees it."""

    image: np.ndarray  # uint8 (28, 28): white ink on black, like MNIST (for display)
    array: np.ndarray  # float32 (1, 28, 28), normalised with the checkpoint's mean/std: the model input
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the original image, right/bottom exclusive
    alternatives: list[list[Digit]] = field(default_factory=list)  # the same ink cut into two touching digits
    merged_with_next: Digit | None = None  # this and the next digit's ink read as one digit
    # With ``preprocess_digits(..., lazy=True)`` the two fields above stay empty until ``expand``: the
    # segmentation's offers are kept, and only those the model's reading can still need get preprocessed.
    _offers: tuple[list[list[Segment]], Segment | None] | None = field(default=None, repr=False, compare=False)
    _make: Callable[[Segment], Digit] | None = field(default=None, repr=False, compare=False)

    @property
    def offers_cut(self) -> bool:
        """The segmentation offered cuts of this digit's ink into two (preprocessed or not yet)."""
        return bool(self.alternatives) or bool(self._offers and self._offers[0])

    @property
    def offers_join(self) -> bool:
        """The segmentation offered to read this digit and the next as one (preprocessed or not yet)."""
        return self.merged_with_next is not None or bool(self._offers and self._offers[1])

    @property
    def tensor(self) -> torch.Tensor:
        """The model input as a torch tensor (a view of ``array``)."""
        import torch

        return torch.from_numpy(self.array)

    def expand(self, cuts: bool = True, join: bool = True) -> None:
        """Preprocess the offered cuts and/or join that ``lazy`` left out (no-op for what is done)."""
        if self._offers is None or self._make is None:
            return
        pieces_list, merged = self._offers
        if cuts and not self.alternatives:
            self.alternatives = [[self._make(s) for s in pieces] for pieces in pieces_list]
        if join and self.merged_with_next is None and merged is not None:
            self.merged_with_next = self._make(merged)


@dataclass
class DigitInput:
    """What ``preprocess_digits`` found: zero or more digits, left to right."""

    digits: list[Digit] = field(default_factory=list)
    light_background: bool = True  # True: dark ink on light paper
    size: tuple[int, int] = (0, 0)  # the original image's (width, height)

    @property
    def array(self) -> np.ndarray:
        """All digits as one float32 batch, (N, 1, 28, 28); N = 0 for a blank image."""
        if not self.digits:
            return np.empty((0, 1, SIZE, SIZE), dtype=np.float32)
        return np.stack([d.array for d in self.digits])

    @property
    def tensor(self) -> torch.Tensor:
        """``array`` as a torch tensor."""
        import torch

        return torch.from_numpy(self.array)

    @property
    def images(self) -> list[np.ndarray]:
        return [d.image for d in self.digits]

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [d.box for d in self.digits]


# ---------------------------------------------------------------------------------------
# the two entry points


def _ink_window(ink: np.ndarray, sigma: float) -> tuple[np.ndarray, int, int]:
    """The ink's bounding box grown by the blur's radius: (crop, top, left).

    On a canvas or a clean scan the paper's ink is exactly 0 and most of the image is paper;
    the steps after this one see the same pixels in the crop (``ndi.gaussian_filter`` of the crop
    equals the whole image's blur there, bit for bit: past the radius there are only zeros or the
    image's own border) and count the zeros left out.
    """
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if rows.size == 0:
        return ink[:0, :0], 0, 0
    r = int(4.0 * sigma + 0.5)  # gaussian_filter's kernel radius (truncate=4)
    t, b = max(0, rows[0] - r), min(ink.shape[0], rows[-1] + 1 + r)
    left, rt = max(0, cols[0] - r), min(ink.shape[1], cols[-1] + 1 + r)
    return ink[t:b, left:rt], int(t), int(left)


def _working_copy(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """Gray resized so its long side is within [WORK_MIN_SIDE, WORK_MAX_SIDE]; and the scale used."""
    h, w = gray.shape
    long = max(h, w)
    scale = 1.0
    if long > WORK_MAX_SIDE:
        scale = WORK_MAX_SIDE / long
    elif long < WORK_MIN_SIDE:
        scale = WORK_MIN_SIDE / long
    if scale == 1.0:
        return gray, scale
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    return np.clip(_resize(gray, size, resample), 0.0, 1.0), scale


def _original_box(
    seg: Segment, scale: float, width: int, height: int, top: int, left: int
) -> tuple[int, int, int, int]:
    """A segment's box in the working crop at (top, left) -> in the original image."""
    x0, t, r, b = seg.box
    x0, t, r, b = x0 + left, t + top, r + left, b + top
    return (
        max(0, int(np.floor(x0 / scale))),
        max(0, int(np.floor(t / scale))),
        min(width, int(np.ceil(r / scale))),
        min(height, int(np.ceil(b / scale))),
    )


def preprocess_digits(
    img: Image.Image, *, mean, std, multi: bool = True, image_size: int = SIZE, lazy: bool = False
) -> DigitInput:
    """Turn a photo, scan, screenshot or drawing of handwritten digits into MNIST-style input.

    Args:
        img: any PIL image (see ``digitlab.inference.image.load_image``).
        mean, std: the checkpoint's normalisation (per channel, on the [0, 1] scale).
        multi: find several digits left to right (a written number); False reads all ink as one digit.
        image_size: the model's input side (28 for MNIST; MNIST's 20/28 box is kept).
        lazy: leave each digit's offered cuts and join unprocessed until ``Digit.expand`` (the
            predictor expands only those that could still change the reading).

    Returns:
        A ``DigitInput`` with one ``Digit`` per digit found; none for a blank image.
    """
    width, height = img.size
    gray = to_grayscale(img)
    light = has_light_background(gray)
    work, scale = _working_copy(gray if light else 1.0 - gray)
    if not light:  # or a sheet on a desk, the desk all round: light paper once the desk is painted over
        on_desk = paper_on_desk(1.0 - work, side=min(width, height))
        if on_desk is not None:
            work, light = on_desk, True
    ink = ink_map(work, max(1.0, scale))
    # Light smoothing: sensor noise and JPEG blocks shrink, a 2 px stroke survives.
    sigma = max(0.7, max(ink.shape) / 800)
    crop, top, left = _ink_window(ink, sigma)
    result = DigitInput(light_background=light, size=(width, height))
    if not crop.size:
        return result
    # An enlarged small image has soft stroke rims as wide as a source pixel: not paper noise.
    edge = int(np.ceil(scale)) if scale > 1 else 0
    thresholded = soft_threshold(ndi.gaussian_filter(crop, sigma), zeros=ink.size - crop.size, edge=edge)
    if thresholded is None:
        return result
    soft, mask = thresholded

    def digit(seg: Segment) -> Digit:
        x0, t, r, b = seg.box
        t0, l0 = max(0, t - 2), max(0, x0 - 2)
        t1, l1 = min(soft.shape[0], b + 2), min(soft.shape[1], r + 2)
        hard = np.zeros((t1 - t0, l1 - l0), dtype=bool)
        hard[t - t0 : b - t0, x0 - l0 : r - l0] = seg.mask
        # The digit's own soft pixels: its mask grown by a little, so neighbours stay out
        # but the grey stroke edges (below the hard threshold) come along.
        near = _grow(hard, 2)  # (a 5x5 max filter)
        image = to_mnist(soft[t0:t1, l0:l1] * near, hard, image_size)
        return Digit(image, normalize_array(image, mean, std), _original_box(seg, scale, width, height, top, left))

    for seg in segment_digits(mask, multi=multi):
        d = digit(seg)
        d._offers, d._make = (seg.alternatives, seg.merged_with_next), digit
        if not lazy:
            d.expand()
        result.digits.append(d)
    return result


def preprocess_generic(img: Image.Image, *, channels: int, image_size: int, mean, std) -> torch.Tensor:
    """A photo for a CIFAR-10 or image-folder model: resize to the training size and normalise.

    Args:
        img: any PIL image; transparency is composited on white.
        channels: 1 (grayscale model) or 3 (RGB).
        image_size: the model's square input side.
        mean, std: the checkpoint's per-channel normalisation.

    Returns:
        float tensor (1, channels, image_size, image_size).
    """
    return normalize(generic_image(img, channels=channels, image_size=image_size), mean, std).unsqueeze(0)


def generic_image(img: Image.Image, *, channels: int, image_size: int) -> np.ndarray:
    """The uint8 image a generic model sees: (S, S) for gray, (S, S, 3) for RGB."""
    if img.mode.startswith("I") or img.mode == "F":
        img = Image.fromarray(np.round(to_grayscale(img) * 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


__all__ = [
    "BOX",
    "FLAT_PAPER",
    "SIZE",
    "Digit",
    "DigitInput",
    "background",
    "even_strokes",
    "generic_image",
    "has_light_background",
    "ink_map",
    "normalize",
    "normalize_array",
    "otsu",
    "preprocess_digits",
    "preprocess_generic",
    "soft_threshold",
    "to_grayscale",
    "to_mnist",
]
