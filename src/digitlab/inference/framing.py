"""MNIST's framing of one digit: even stroke width, a 20x20 box inside 28x28, centred by mass.

Step 6 of ``digitlab.inference.preprocess``, and the normalisation to the checkpoint's mean/std.
MNIST digits are white ink on black, size-normalised into a 20x20 box keeping their aspect
ratio, anti-aliased, and centred by centre of mass in a 28x28 field; ``to_mnist`` rebuilds that
from any crop of soft ink.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from digitlab.inference.lighting import _resize, _stroke_width

if TYPE_CHECKING:
    import torch

BOX = 20  # MNIST's digit box inside ...
SIZE = 28  # ... its 28x28 field
STROKE_FRACTION = 0.12  # MNIST strokes are ~2.4 px wide in the 20 px box (measured on the test set)
THIN_STROKE = 0.75  # thicken strokes thinner than this fraction of the target width
THICK_STROKE = 2.0  # thin strokes thicker than this multiple of the target width
DIGIT_SIDE = 80  # one digit's strokes are evened out on a copy this large (4x the 20 px box is plenty)


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
    import torch

    return torch.from_numpy(normalize_array(images, mean, std))


def normalize_array(images: np.ndarray, mean, std) -> np.ndarray:
    """``normalize`` as a float32 numpy array: what the predictor hands to either runtime.

    Why numpy: the same float32 operations as in torch at a fifth of the cost for one digit, and an
    ONNX deployment runs without torch installed.
    """
    x = np.array(images, dtype=np.float32) / np.float32(255.0)  # a copy: the input may be read-only
    if x.ndim == 3:  # (H, W, C) -> (C, H, W)
        x = x.transpose(2, 0, 1)
    elif x.ndim == 2:
        x = x[None]
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return np.ascontiguousarray((x - m) / s)
