"""A sheet photographed on a desk: the desk all round the image is not the paper.

Where most of an image's frame is one even colour, ``lighting.has_light_background`` takes that
colour for the paper, which is right for a canvas, a scan or a tight crop. A note photographed
lying on a table breaks it: the table fills the frame, so the light sheet would read as ink on a
dark ground. Such a picture has a sheet in it: a large light quadrilateral with a little dark ink
inside. When there is one, the dark regions that touch the image's edge (the desk) are
painted the paper's colour, and the picture is dark ink on light paper.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from digitlab.inference.lighting import (
    DECIDE_SIDE,
    MIN_INK_CONTRAST,
    _grow,
    _shrink,
    even_frame_is_light,
    image_frame,
    otsu,
)
from digitlab.inference.segment import _EIGHT_CONNECTED

MIN_SIDE = 100  # a picture with a short side under this shows no desk: dataset digits (16-32 px) are light
# ink on a dark ground, framed tight, and their bold strokes can look like a sheet
CHECK_SIDE = 128  # the sheet is found on a copy this small (long side): cheap, and it is large
SHEET_AREA = 0.42  # the sheet: a light region covering 42% of the image at least, holes filled, ...
SHEET_INK = 0.35  # ... its holes (the ink on it) a third of that at most ...
SHEET_RECTANGLE = 0.88  # ... and a quadrilateral: its area 88% of the smallest rectangle around it at least
# (a sheet seen at an angle; a rectangle 1, an ellipse 0.79). Light ink on a dark ground is none of
# these: a bold 0 is mostly stroke around its hole, a bold 8 or 2 far from a rectangle.


def _rectangularity(mask: np.ndarray) -> float:
    """A region's area over the smallest rectangle around it, at any angle (pixel corners): 1 for a
    rectangle, 0.79 for an ellipse, less for a bold 8. Rotating calipers on its convex hull."""
    ys, xs = np.nonzero(mask)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dy in (0, 1) for dx in (0, 1)]).astype(np.float64)
    try:
        hull = corners[ConvexHull(corners).vertices]
    except QhullError:  # all on a line
        return 1.0
    edges = np.roll(hull, -1, axis=0) - hull
    angles = np.arctan2(edges[:, 1], edges[:, 0])
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    u = hull[None, :, 0] * c + hull[None, :, 1] * s  # the hull in each edge's frame
    v = -hull[None, :, 0] * s + hull[None, :, 1] * c
    area = float(np.min((u.max(1) - u.min(1)) * (v.max(1) - v.min(1))))
    return float(mask.sum()) / max(area, 1.0)


def paper_on_desk(gray: np.ndarray, side: int | None = None) -> np.ndarray | None:
    """``gray`` with the desk around the sheet painted the paper's colour; None when it shows no such desk.

    Args:
        gray: float gray in [0, 1] (the working copy).
        side: the short side of the picture ``gray`` was resized from (default: ``gray``'s own).
    """
    # only the case ``has_light_background`` decides by an even frame, and decides dark
    if (side or min(gray.shape)) < MIN_SIDE or even_frame_is_light(_shrink(gray, DECIDE_SIDE)) is not False:
        return None
    small = _shrink(gray, CHECK_SIDE)
    lo, hi = np.percentile(small, [1, 99])
    if hi - lo < MIN_INK_CONTRAST:
        return None
    t = otsu(small)
    labels, n = ndi.label(small > t)
    if n == 0:
        return None
    sheet = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    filled = ndi.binary_fill_holes(sheet)
    area = int(filled.sum())
    if (
        area < SHEET_AREA * small.size
        or sheet.sum() < (1.0 - SHEET_INK) * area
        or _rectangularity(filled) < SHEET_RECTANGLE
    ):
        return None
    paper = float(np.median(small[sheet]))
    labels, _ = ndi.label(gray <= t, structure=_EIGHT_CONNECTED)  # the desk, traced at full resolution
    edge = np.unique(image_frame(labels))
    desk = np.isin(labels, edge[edge > 0])
    if not desk.any():
        return None
    out = gray.copy()
    out[_grow(desk, 1)] = paper  # a pixel more: the step's own edge pixels leave no line
    return out
