"""Ink and paper, whatever the light: which way round, the paper's brightness, the threshold.

Steps 2-4 of ``digitlab.inference.preprocess``:

- ``has_light_background``: dark ink on light paper, or light on dark? Decided from the frame
  when most of it is one even colour (a canvas, a scan, a tight crop whose strokes run off the
  edges), else from which side of the histogram has the long tail after a high-pass.
- ``ink_map``: divide out a large-scale background estimate (uneven light, vignetting), so ink
  is 0 on paper and near 1 on strokes whatever the lighting.
- ``soft_threshold``: Otsu on the ink map, as a ramp so stroke edges keep grey levels; a nearly
  blank image returns None.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

DECIDE_SIDE = 64  # ink-or-paper is decided on a copy this small (long side)
BACKGROUND_SIDE = 96  # the background is estimated on a copy this small (cheap, and smooth anyway)
BACKGROUND_WINDOW = 0.15  # closing window, as a fraction of the short side: wider than a pen stroke,
# narrow enough to follow the curved light of a vignette (a wider closing overshoots in dark corners)
WINDOW_PER_STROKE = 3.0  # ... but always this many times wider than the strokes found (a marker's are wide)
MAX_WINDOW = 0.6  # the window never grows past this fraction of the short side
FLAT_PAPER = 0.06  # paper whose brightness spans less than this (2nd-98th percentile) is evenly lit:
# a canvas, a screenshot, a scan; its one level is the background, however wide the strokes
EVEN_FRAME = 0.6  # ... and a frame this much of which is within FLAT_PAPER / 2 of its median is that even
# paper crossed by strokes (a digit cropped tight, its ink touching the edges)
TWO_LEVEL = 0.2  # an image with under this share of its pixels in the middle half of its range, away from the
# edges between its levels (``_between_levels``), is two-level ...
FRAME_MAJORITY = 2 / 3  # ... and the level holding this much of its frame is the paper
PAPER_MARGIN = 3  # ... counting only paper this many pixels (of the small copy) away from the ink: the
# soft edges of blurred or enlarged strokes are not uneven light
MIN_INK_CONTRAST = 0.2  # strongest strokes under 20% darker than the paper: blank (noise, texture)
MIN_INK_SNR = 6.0  # ... or standing less than 6 noise deviations above the paper: blank


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


# ---------------------------------------------------------------------------------------
# which way round


def _pad_odd(a: np.ndarray, pad: int) -> tuple[np.ndarray, int]:
    """Pad by point reflection, so slopes continue past the edge (a vignette is no valley there).

    Returns the padded array and the pad actually used (at most the array's side - 1).
    """
    pad = max(0, min(pad, min(a.shape) - 1))
    if not pad:
        return a, 0
    # np.pad(a, pad, mode="reflect", reflect_type="odd"), written out: np.pad costs more on arrays this small
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


def _between_levels(small: np.ndarray, lo: float, hi: float, t: float) -> float:
    """Share of pixels in the middle half of the range ``lo..hi`` that do not border the other level.

    Why: a stroke's anti-aliased edge is one pixel of grey with ink on one side and paper on the other,
    so on a tiny image (16 px, bold strokes) a fifth of the pixels are grey without any gradient in the
    light. The grey of a vignette or a soft photo has grey neighbours, not both levels, and still counts.
    """
    quarter = (hi - lo) / 4
    middle = np.abs(small - (lo + hi) / 2) < quarter
    edges = _grow(small < lo + quarter, 1) & _grow(small > hi - quarter, 1)  # both levels next to it: a step
    return float(np.mean(middle & ~edges))


def image_frame(a: np.ndarray) -> np.ndarray:
    """An image's outermost pixels, as one 1-D array."""
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def even_frame_is_light(small: np.ndarray) -> bool | None:
    """When most of the frame is one even colour (a canvas, a scan, a tight crop whose strokes run off
    the edges), whether that colour is light: it is the paper, even when bold strokes cover much of
    the image. None when the frame is not that even."""
    frame = image_frame(small)
    mid = float(np.median(frame))
    if np.mean(np.abs(frame - mid) <= FLAT_PAPER / 2) < EVEN_FRAME:
        return None
    return bool(mid > otsu(small))


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
    even = even_frame_is_light(small)
    if even is not None:
        return even
    frame = image_frame(small)
    t = otsu(small)
    lo, hi = np.percentile(small, [1, 99])
    if hi - lo >= MIN_INK_CONTRAST and _between_levels(small, lo, hi, t) < TWO_LEVEL:
        # Two levels and little between (a bitmap, a clean scan, a size-normalised crop whose anti-aliased
        # strokes leave the frame no one even colour): the paper is the level that holds most of the frame.
        light = float(np.mean(frame > t))
        if max(light, 1.0 - light) >= FRAME_MAJORITY:
            return light > 0.5
    sigma = max(1.0, 0.1 * min(small.shape))
    d = small - _blur_small(small, sigma, truncate=3.0)
    q = np.percentile(d, [0.5, 1, 2, 5, 50, 95, 98, 99, 99.5])
    med = q[4]
    dark_tail = float(np.sum(med - q[:4]))
    light_tail = float(np.sum(q[5:] - med))
    return dark_tail >= light_tail


# ---------------------------------------------------------------------------------------
# even out the light


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


def background(gray: np.ndarray, enlarged: float = 1.0) -> np.ndarray:
    """Paper brightness everywhere (H, W): a grey closing wider than any stroke erases the ink.

    A closing narrower than the strokes keeps them, and the ink map then keeps only their
    rims (a marker-drawn 1 becomes a hollow 0). Evenly lit paper (a canvas, a scan) needs no
    closing: its one level is the background. Otherwise the strokes the closing leaves are
    measured, and while they are wide for the window, the window widens to WINDOW_PER_STROKE
    times their width. ``enlarged``: how much the caller enlarged a small image (its stroke edges
    are that much softer, so the paper is counted further from the ink).
    """
    h, w = gray.shape
    small = _shrink(gray, BACKGROUND_SIDE, short=True)
    ink = small <= otsu(small)
    margin = PAPER_MARGIN + int(np.ceil(enlarged * min(small.shape) / min(h, w))) - 1
    paper = small[~_grow(ink, margin)]  # soft stroke edges are not paper
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


def ink_map(gray: np.ndarray, enlarged: float = 1.0) -> np.ndarray:
    """Ink strength (H, W) in [0, 1] from dark-ink-on-light gray: 0 on paper whatever the light.

    Dividing by the local paper brightness cancels the illumination (a shadowed stroke
    and a lit one have the same contrast relative to the paper around them).
    """
    bg = background(gray, enlarged)
    return np.clip((bg - gray) / np.maximum(bg, 0.1), 0.0, 1.0)


# ---------------------------------------------------------------------------------------
# soft threshold


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


def soft_threshold(ink: np.ndarray, zeros: int = 0, edge: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """(soft, mask): a ramp around Otsu's threshold, and the hard mask above it; None if blank.

    Below half the threshold is paper (0); above midway between the threshold and the
    typical stroke is full ink (1); in between stays grey, as at MNIST's stroke edges.
    ``zeros``: paper pixels left out of ``ink`` because their ink is exactly 0 (a crop of the
    image to its ink); they count as they would in the whole image. ``edge``: pixels this close to
    the ink are its soft rim, not paper noise (an enlarged small image has rims this wide).
    """
    if float(ink.max()) < MIN_INK_CONTRAST:
        return None
    t = otsu(ink, zeros=zeros)
    mask = ink > t
    if not mask.any():
        return None
    strong = float(np.percentile(ink[mask], 90))
    paper = ink[~_grow(mask, edge)] if edge else ink[~mask]
    n = paper.size + zeros
    mean = float(paper.sum(dtype=np.float64)) / n if n else 0.0
    noise = float(np.sqrt((np.square(paper - mean, dtype=np.float64).sum() + zeros * mean**2) / n)) if n else 0.0
    if strong < MIN_INK_CONTRAST or strong - mean < MIN_INK_SNR * noise:
        return None
    lo, hi = 0.5 * t, max(0.5 * (t + strong), t + 1e-3)
    return np.clip((ink - lo) / (hi - lo), 0.0, 1.0), mask
