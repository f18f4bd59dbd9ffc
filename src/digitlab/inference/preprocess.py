"""The one path from any user image to model input.

MNIST digits are white ink on black, size-normalised into a 20x20 box keeping their aspect
ratio, anti-aliased, and centred by centre of mass in a 28x28 field. A phone photo, a scan
or a canvas drawing is none of that, so ``preprocess_digits`` rebuilds it step by step:

1. ``to_grayscale``: any Pillow mode to float gray in [0, 1]; transparency composited.
2. ``has_light_background``: dark ink on light paper, or light on dark?
3. ``ink_map``: divide out a large-scale background estimate (uneven light, vignetting),
   so ink is 0 on paper and near 1 on strokes whatever the lighting.
4. ``soft_threshold``: Otsu on the ink map, as a ramp so stroke edges keep grey levels;
   a nearly blank image returns None.
5. ``digitlab.inference.segment``: drop specks, find the digits left to right.
6. ``to_mnist``: per digit, even out the stroke width, fit into 20x20 with area averaging,
   paste into 28x28 by centre of mass.

The CLI, the web app, evaluation on files and the tests all go through this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from scipy import ndimage as ndi

from digitlab.inference.segment import Segment, segment_digits

WORK_MAX_SIDE = 1024  # larger images are reduced first: a digit needs no more pixels than this
WORK_MIN_SIDE = 96  # smaller ones are enlarged so the pixel-sized steps below have room (a 20 px
# MNIST digit becomes ~70 px; 256 and 128 read no better, and the web page's 96 px drawings skip a resize)
DECIDE_SIDE = 64  # ink-or-paper is decided on a copy this small (long side)
BACKGROUND_SIDE = 96  # the background is estimated on a copy this small (cheap, and smooth anyway)
BACKGROUND_WINDOW = 0.15  # closing window, as a fraction of the short side: wider than a pen stroke,
# narrow enough to follow the curved light of a vignette (a wider closing overshoots in dark corners)
WINDOW_PER_STROKE = 3.0  # ... but always this many times wider than the strokes found (a marker's are wide)
MAX_WINDOW = 0.6  # the window never grows past this fraction of the short side
FLAT_PAPER = 0.06  # paper whose brightness spans less than this (2nd-98th percentile) is evenly lit:
# a canvas, a screenshot, a scan; its one level is the background, however wide the strokes
PAPER_MARGIN = 3  # ... counting only paper this many pixels (of the small copy) away from the ink: the
# soft edges of blurred or enlarged strokes are not uneven light
MIN_INK_CONTRAST = 0.2  # strongest strokes under 20% darker than the paper: blank (noise, texture)
MIN_INK_SNR = 6.0  # ... or standing less than 6 noise deviations above the paper: blank
BOX = 20  # MNIST's digit box inside ...
SIZE = 28  # ... its 28x28 field
STROKE_FRACTION = 0.12  # MNIST strokes are ~2.4 px wide in the 20 px box (measured on the test set)
THIN_STROKE = 0.75  # thicken strokes thinner than this fraction of the target width
THICK_STROKE = 2.0  # thin strokes thicker than this multiple of the target width
DIGIT_SIDE = 80  # one digit's strokes are evened out on a copy this large (4x the 20 px box is plenty)


@dataclass
class Digit:
    """One digit as the model sees it."""

    image: np.ndarray  # uint8 (28, 28): white ink on black, like MNIST (for display)
    tensor: torch.Tensor  # float (1, 28, 28), normalised with the checkpoint's mean/std
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
    def tensor(self) -> torch.Tensor:
        """All digits as one batch, (N, 1, 28, 28); N = 0 for a blank image."""
        if not self.digits:
            return torch.empty(0, 1, SIZE, SIZE)
        return torch.stack([d.tensor for d in self.digits])

    @property
    def images(self) -> list[np.ndarray]:
        return [d.image for d in self.digits]

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [d.box for d in self.digits]


# ---------------------------------------------------------------------------------------
# 1. gray


def _alpha_composite(img: Image.Image) -> np.ndarray:
    """Gray from an image with transparency, on a backdrop that contrasts with the drawing.

    A browser canvas exported as PNG is transparent where nothing was drawn; the strokes
    may be black or white. Mostly transparent: the opaque pixels are the drawing, so they
    go on the opposite backdrop. Mostly opaque: a normal picture, composited on white.
    """
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    lum = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
    alpha = rgba.getchannel("A")
    if alpha.getextrema()[0] / 255.0 >= 0.99:  # opaque (a browser canvas): nothing to composite
        return lum
    a = np.asarray(alpha, dtype=np.float32) / 255.0
    opaque = a > 0.5
    backdrop = 1.0
    if opaque.mean() < 0.5 and opaque.any() and float(lum[opaque].mean()) > 0.5:
        backdrop = 0.0  # light strokes on a transparent canvas
    return lum * a + backdrop * (1.0 - a)


def to_grayscale(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to float32 gray (H, W) in [0, 1].

    Handles 1/L/P/RGB/CMYK/YCbCr, transparency (RGBA, LA, PA, palette with a transparent
    colour), 16-bit and 32-bit integer and float images.
    """
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float32) / 65535.0
    if mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = float(arr.max()) if arr.size else 0.0
        if mode == "F" and top <= 1.0:
            return np.clip(arr, 0.0, 1.0)
        scale = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        return np.clip(arr / scale, 0.0, 1.0)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        return _alpha_composite(img)
    if mode not in ("1", "L", "P", "RGB", "CMYK", "YCbCr", "RGBX"):
        img = img.convert("RGB")  # LAB, HSV and other rare modes
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------
# 2. which way round


def _pad_odd(a: np.ndarray, pad: int) -> tuple[np.ndarray, int]:
    """Pad by point reflection, so slopes continue past the edge (a vignette is no valley there).

    Returns the padded array and the pad actually used (at most the array's side - 1).
    """
    pad = max(0, min(pad, min(a.shape) - 1))
    if not pad:
        return a, 0
    # np.pad(a, pad, mode="reflect", reflect_type="odd"), written out: np.pad costs 5x more
    a = np.concatenate([2 * a[:1] - a[pad:0:-1], a, 2 * a[-1:] - a[-2 : -pad - 2 : -1]], axis=0)
    a = np.concatenate([2 * a[:, :1] - a[:, pad:0:-1], a, 2 * a[:, -1:] - a[:, -2 : -pad - 2 : -1]], axis=1)
    return a, pad


def _unpad(a: np.ndarray, pad: int) -> np.ndarray:
    return a[pad:-pad, pad:-pad] if pad else a


@lru_cache(maxsize=64)
def _blur_operator(n: int, pad: int, sigma: float, truncate: float) -> np.ndarray:
    """(n, n) matrix of one axis of ``_unpad(gaussian_filter(_pad_odd(a, pad)), pad)``: padding
    and blur are linear, so on a small image two cached matrix products replace them."""
    eye = np.eye(n)
    padded = np.concatenate([2 * eye[:1] - eye[pad:0:-1], eye, 2 * eye[-1:] - eye[-2 : -pad - 2 : -1]]) if pad else eye
    return ndi.gaussian_filter1d(padded, sigma, axis=0, truncate=truncate)[pad : pad + n]


def _blur_small(a: np.ndarray, sigma: float, truncate: float) -> np.ndarray:
    """``_unpad(ndi.gaussian_filter(_pad_odd(a, 3 * sigma), sigma, truncate), pad)`` of a small float32
    image, by matrices (float32 between the two axes, as scipy rounds)."""
    pad = max(0, min(int(3 * sigma), min(a.shape) - 1))
    rows = _blur_operator(a.shape[0], pad, sigma, truncate)
    cols = _blur_operator(a.shape[1], pad, sigma, truncate)
    return ((rows @ a).astype(np.float32) @ cols.T).astype(np.float32)


def has_light_background(gray: np.ndarray) -> bool:
    """True for dark ink on light paper, False for light ink on a dark background.

    Ink is the minority of the pixels and stands out from the paper around it, so after
    removing the large-scale light (a high-pass), its side of the histogram has the long
    tail. Comparing tails instead of absolute levels keeps a dark vignette on white paper,
    or a grey photo, from passing for a dark background. An evenly coloured frame is
    simpler: the paper is that colour (thick marker strokes can outnumber it inside). Decided on a small copy: the
    tails are about areas, which shrinking keeps, and a wide blur on a full-size image
    would cost most of the preprocessing time.
    """
    small = _shrink(gray, DECIDE_SIDE)
    frame = np.concatenate([small[0], small[-1], small[1:-1, 0], small[1:-1, -1]])
    lo, mid, hi = np.percentile(frame, [5, 50, 95])
    if hi - lo < FLAT_PAPER:  # an evenly coloured frame (a canvas, a scan): that colour is the paper
        return bool(mid > otsu(small))  # even when thick strokes cover much of the image
    sigma = max(1.0, 0.1 * min(small.shape))
    d = small - _blur_small(small, sigma, truncate=3.0)
    q = np.percentile(d, [0.5, 1, 2, 5, 50, 95, 98, 99, 99.5])
    med = q[4]
    dark_tail = float(np.sum(med - q[:4]))
    light_tail = float(np.sum(q[5:] - med))
    return dark_tail >= light_tail


# ---------------------------------------------------------------------------------------
# 3. even out the light


def _resize(arr: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize a float32 array to (width, height) through Pillow's float mode."""
    return np.asarray(Image.fromarray(arr.astype(np.float32, copy=False), mode="F").resize(size, resample))


def _shrink(gray: np.ndarray, side: int, short: bool = False) -> np.ndarray:
    """An area-averaged copy whose long (or, with ``short``, short) side is at most ``side``."""
    h, w = gray.shape
    f = min(1.0, side / (min(h, w) if short else max(h, w)))
    if f == 1.0:
        return gray
    return _resize(gray, (max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)


def _closing_background(small: np.ndarray, k: int) -> np.ndarray:
    """Paper brightness of a small copy: a grey closing with a k x k window, softened."""
    padded, pad = _pad_odd(small, k)
    bg = _unpad(ndi.grey_closing(padded, size=(k, k)), pad)
    return ndi.gaussian_filter(bg, sigma=k / 4, mode="nearest")  # soften the closing's blocks


def background(gray: np.ndarray) -> np.ndarray:
    """Paper brightness everywhere (H, W): a grey closing wider than any stroke erases the ink.

    A closing narrower than the strokes keeps them, and the ink map then keeps only their
    rims (a marker-drawn 1 becomes a hollow 0). Evenly lit paper (a canvas, a scan) needs no
    closing: its one level is the background. Otherwise the strokes the closing leaves are
    measured, and while they are wide for the window, the window widens to WINDOW_PER_STROKE
    times their width.
    """
    h, w = gray.shape
    small = _shrink(gray, BACKGROUND_SIDE, short=True)
    ink = small <= otsu(small)
    paper = small[~_grow(ink, PAPER_MARGIN)]  # soft stroke edges are not paper
    if paper.size:
        lo, mid, hi = np.percentile(paper, [2, 50, 98])
        if hi - lo < FLAT_PAPER:
            return np.maximum(np.float32(mid), gray)
    side = min(small.shape)
    k = max(3, int(BACKGROUND_WINDOW * side) | 1)
    bg = _closing_background(small, k)
    for _ in range(3):
        ink = np.clip((bg - small) / np.maximum(bg, 0.1), 0.0, 1.0)
        if float(ink.max()) < MIN_INK_CONTRAST:
            break
        width = _stroke_width(ink > otsu(ink))
        wanted = min(int(MAX_WINDOW * side), int(np.ceil(WINDOW_PER_STROKE * width))) | 1
        if wanted <= k:
            break
        k = wanted
        bg = _closing_background(small, k)
    return np.maximum(_resize(bg, (w, h), Image.Resampling.BILINEAR), gray)


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Ink strength (H, W) in [0, 1] from dark-ink-on-light gray: 0 on paper whatever the light.

    Dividing by the local paper brightness cancels the illumination (a shadowed stroke
    and a lit one have the same contrast relative to the paper around them).
    """
    bg = background(gray)
    return np.clip((bg - gray) / np.maximum(bg, 0.1), 0.0, 1.0)


# ---------------------------------------------------------------------------------------
# 4. soft threshold


@lru_cache(maxsize=4)
def _bin_edges(bins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    return edges, (edges[:-1] + edges[1:]) / 2


def otsu(values: np.ndarray, bins: int = 256, zeros: int = 0) -> float:
    """Otsu's threshold of values in [0, 1] (and ``zeros`` more 0s): the cut that best separates two classes."""
    # bincount on quantised values: np.histogram's general binning costs several times more
    idx = np.clip((values.ravel() * bins).astype(np.int32), 0, bins - 1)
    hist = np.bincount(idx, minlength=bins).astype(np.float64)
    hist[0] += zeros
    edges, centers = _bin_edges(bins)
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def soft_threshold(ink: np.ndarray, zeros: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """(soft, mask): a ramp around Otsu's threshold, and the hard mask above it; None if blank.

    Below half the threshold is paper (0); above midway between the threshold and the
    typical stroke is full ink (1); in between stays grey, as at MNIST's stroke edges.
    ``zeros``: paper pixels left out of ``ink`` because their ink is exactly 0 (a crop of the
    image to its ink); they count as they would in the whole image.
    """
    if float(ink.max()) < MIN_INK_CONTRAST:
        return None
    t = otsu(ink, zeros=zeros)
    mask = ink > t
    if not mask.any():
        return None
    strong = float(np.percentile(ink[mask], 90))
    paper = ink[~mask]
    n = paper.size + zeros
    mean = float(paper.sum(dtype=np.float64)) / n if n else 0.0
    noise = float(np.sqrt((np.square(paper - mean, dtype=np.float64).sum() + zeros * mean**2) / n)) if n else 0.0
    if strong < MIN_INK_CONTRAST or strong - mean < MIN_INK_SNR * noise:
        return None
    lo, hi = 0.5 * t, max(0.5 * (t + strong), t + 1e-3)
    return np.clip((ink - lo) / (hi - lo), 0.0, 1.0), mask


# ---------------------------------------------------------------------------------------
# 6. MNIST's normalisation


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a binary shape: twice the area over the boundary length."""
    inner = mask.copy()  # ndi.binary_erosion(mask, border_value=0) with the 4-neighbour cross, written out
    inner[0] = inner[-1] = False
    inner[:, 0] = inner[:, -1] = False
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    boundary = mask & ~inner
    return 2.0 * float(mask.sum()) / max(int(boundary.sum()), 1)


def even_strokes(soft: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """Bring the stroke width near MNIST's (a fraction of the digit's size).

    A mouse stroke 3 px wide on a 280 px canvas is a hair after scaling into 20 px;
    a marker stroke can fill the loops of an 8. Thicken or thin by the distance transform,
    which costs the same for any radius.
    """
    side = max(hard.shape)
    target = STROKE_FRACTION * side
    width = _stroke_width(hard)
    if width < THIN_STROKE * target:
        r = (target - width) / 2
        pad = int(np.ceil(r)) + 1
        soft, hard = np.pad(soft, pad), np.pad(hard, pad)
        dist = ndi.distance_transform_edt(~hard)  # distance to the nearest stroke pixel
        return np.maximum(soft, np.clip(r + 0.5 - dist, 0.0, 1.0))
    if width > THICK_STROKE * target:
        r = (width - 1.5 * target) / 2
        dist = ndi.distance_transform_edt(hard)  # distance to the nearest paper pixel
        thinned = np.minimum(soft, np.clip(dist - r + 0.5, 0.0, 1.0))
        if thinned.sum() > 0.3 * soft.sum():  # never erase a digit to make it thin
            return thinned
    return soft


def _crop_to_ink(a: np.ndarray, level: float = 0.05) -> np.ndarray:
    rows, cols = np.flatnonzero((a > level).any(1)), np.flatnonzero((a > level).any(0))
    if rows.size == 0:
        return a
    return a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _shrink_digit(soft: np.ndarray, hard: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Soft ink and its mask area-averaged so the long side is at most ``side``.

    The digit ends in a 20 px box; distance transforms on a 300 px crop would cost ten times
    more for nothing. A mask pixel stays ink when a third of it was (keeps thin strokes whole).
    """
    h, w = hard.shape
    f = side / max(h, w)
    if f >= 1.0:
        return soft, hard
    size = (max(1, round(w * f)), max(1, round(h * f)))
    cover = _resize(hard.astype(np.float32), size, Image.Resampling.BOX)
    return _resize(soft, size, Image.Resampling.BOX), cover > 0.33


def to_mnist(soft: np.ndarray, hard: np.ndarray, size: int = SIZE) -> np.ndarray:
    """One digit's soft ink crop (h, w) to a uint8 (size, size) image, MNIST's way."""
    box = round(size * BOX / SIZE)
    soft, hard = _shrink_digit(soft, hard, round(DIGIT_SIDE * box / BOX))
    a = _crop_to_ink(even_strokes(soft, hard))
    h, w = a.shape
    scale = box / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    # BOX is exact area averaging when shrinking: the anti-aliasing MNIST's grey edges come from.
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    a = np.clip(_resize(a, (nw, nh), resample), 0.0, None)
    a = a / max(float(a.max()), 1e-6)  # the core of a stroke is full ink, as in MNIST
    cy, cx = ndi.center_of_mass(a) if a.sum() > 0 else ((nh - 1) / 2, (nw - 1) / 2)
    # MNIST puts the centre of mass at the centre; keep the digit inside the field.
    top = int(np.clip(round(size / 2 - cy), 0, size - nh))
    left = int(np.clip(round(size / 2 - cx), 0, size - nw))
    out = np.zeros((size, size), dtype=np.float32)
    out[top : top + nh, left : left + nw] = a
    return np.round(out * 255).astype(np.uint8)


def normalize(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 (..., H, W) or (..., H, W, C) arrays -> float tensor normalised per channel, channels first."""
    # In numpy, then one tensor: the same float32 operations as in torch, at a fifth of the cost for one digit.
    x = np.array(images, dtype=np.float32) / np.float32(255.0)  # a copy: the input may be read-only
    if x.ndim == 3:  # (H, W, C) -> (C, H, W)
        x = x.transpose(2, 0, 1)
    elif x.ndim == 2:
        x = x[None]
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return torch.from_numpy(np.ascontiguousarray((x - m) / s))


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
    l, rt = max(0, cols[0] - r), min(ink.shape[1], cols[-1] + 1 + r)
    return ink[t:b, l:rt], int(t), int(l)


def _grow(mask: np.ndarray, r: int) -> np.ndarray:
    """A boolean mask grown by ``r`` pixels in x and y (``ndi.maximum_filter(mask, 2 * r + 1)``)."""
    out = mask.copy()
    for s in range(1, r + 1):
        out[s:] |= mask[:-s]
        out[:-s] |= mask[s:]
    rows = out.copy()
    for s in range(1, r + 1):
        out[:, s:] |= rows[:, :-s]
        out[:, :-s] |= rows[:, s:]
    return out


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
    l, t, r, b = seg.box
    l, t, r, b = l + left, t + top, r + left, b + top
    return (
        max(0, int(np.floor(l / scale))),
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
    ink = ink_map(work)
    # Light smoothing: sensor noise and JPEG blocks shrink, a 2 px stroke survives.
    sigma = max(0.7, max(ink.shape) / 800)
    crop, top, left = _ink_window(ink, sigma)
    result = DigitInput(light_background=light, size=(width, height))
    if not crop.size:
        return result
    thresholded = soft_threshold(ndi.gaussian_filter(crop, sigma), zeros=ink.size - crop.size)
    if thresholded is None:
        return result
    soft, mask = thresholded

    def digit(seg: Segment) -> Digit:
        l, t, r, b = seg.box
        t0, l0 = max(0, t - 2), max(0, l - 2)
        t1, l1 = min(soft.shape[0], b + 2), min(soft.shape[1], r + 2)
        hard = np.zeros((t1 - t0, l1 - l0), dtype=bool)
        hard[t - t0 : b - t0, l - l0 : r - l0] = seg.mask
        # The digit's own soft pixels: its mask grown by a little, so neighbours stay out
        # but the grey stroke edges (below the hard threshold) come along.
        near = _grow(hard, 2)  # (a 5x5 max filter)
        image = to_mnist(soft[t0:t1, l0:l1] * near, hard, image_size)
        return Digit(image, normalize(image, mean, std), _original_box(seg, scale, width, height, top, left))

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
