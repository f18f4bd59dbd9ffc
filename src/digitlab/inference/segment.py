"""Split binarised ink into digits, left to right.

A written number is a row of digits. Connected components are the starting point, but a
pen lifted mid-digit breaks one digit into several components (the detached top stroke of
a 5, the bar of a 4 or 7) and digits written close together touch. So: drop specks, merge
components that sit above one another, split components far wider than one digit at the
thinnest column, drop marks far smaller than the digits around them; then offer a few cuts
of anything else wide enough to be two touching digits, and a join of close neighbours
that could be one digit (the predictor lets the model choose among the readings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

SPECK_FRACTION = 0.03  # a component under 3% of the largest one's area is a speck, not a stroke
MIN_SPECK_PIXELS = 6  # and anything this small always is
MERGE_OVERLAP = 0.5  # merge two parts when their x-ranges overlap by half the narrower one's width
MERGE_MAX_GAP = 0.6  # ... and the vertical gap between them is under 0.6 of the taller one's height
SMALL_PART = 0.5  # a part under half the other's height merges with any x-overlap (a 5's wide flag) ...
SMALL_PART_GAP = 0.3  # ... or when it is this close (x-gap, as a fraction of the taller part's height)
DIGIT_ASPECT = 0.8  # a generous width/height for one handwritten digit (MNIST's mean is ~0.72)
VALLEY_ASPECT = 1.2  # a part wider than 1.2x its height is cut where a column is nearly empty:
VALLEY_RATIO = 0.3  # under 0.3x the median ink per column
ALTERNATIVE_ASPECT = 0.9  # a part wider than 0.9x its height may be two touching digits (model decides)
MIN_PIECE_HEIGHT = 0.5  # each piece of a split spans half the height at least (a digit, not a tail)
MIN_PIECE_ASPECT = 0.2  # no split leaves a piece narrower than 0.2x the height (a thin 1 is ~0.15-0.3)
CUT_CANDIDATES = 3  # touching digits: cuts offered to the model, which reads each and keeps the best
CUT_SEPARATION = 0.12  # candidate cuts at least this far apart (fraction of the height)
JOIN_GAP = 0.3  # neighbours closer than this (x-gap / the taller one's height) may be one digit in two strokes ...
JOIN_ASPECT = 1.6  # ... when together they are no wider than this times their height (the model decides)
SMALL_MARK_AREA = 0.1  # a group under 10% of the largest group's area ...
SMALL_MARK_HEIGHT = 0.45  # ... and under 45% of its height is a stray mark, not a digit
FRAME_RIM = 0.12  # a frame (a box printed or drawn around the digit): its ink lies within this fraction of
# its box's short side from the box's edges ...
FRAME_HOLLOW = 0.9  # ... 90% of it at least, ...
FRAME_SIDE_COVER = 0.6  # ... running along 60% of a side's length at least ...
FRAME_SIDES = 3  # ... on 3 sides of the 4 at least, and around another mark

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class Segment:
    """One digit's pixels: ``mask`` covers ``box`` = (left, top, right, bottom), right/bottom exclusive."""

    box: tuple[int, int, int, int]
    mask: np.ndarray  # bool (bottom - top, right - left)
    alternatives: list[list[Segment]] = field(
        default_factory=list
    )  # the same ink cut into two touching digits, best cut first
    merged_with_next: Segment | None = None  # this and the next segment as one digit written in two strokes

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


def _tight(mask: np.ndarray, left: int, top: int) -> Segment | None:
    """The segment of a mask given at (left, top), cropped to its ink."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return Segment((left + int(c0), top + int(r0), left + int(c1), top + int(r1)), mask[r0:r1, c0:c1])


def _hollow(seg: Segment) -> bool:
    """Ink only along the edges of its own box, on three sides or four: the shape of a frame."""
    h, w = seg.height, seg.width
    rim = max(2, int(np.ceil(FRAME_RIM * min(h, w))))
    if min(h, w) <= 3 * rim:
        return False
    m = seg.mask
    inner = m[rim:-rim, rim:-rim]
    if inner.sum() > (1.0 - FRAME_HOLLOW) * m.sum():
        return False
    covered = [m[:rim].any(0).mean(), m[-rim:].any(0).mean(), m[:, :rim].any(1).mean(), m[:, -rim:].any(1).mean()]
    return sum(c >= FRAME_SIDE_COVER for c in covered) >= FRAME_SIDES


def drop_frames(segs: list[Segment]) -> list[Segment]:
    """Drop boxes around the digits (a form's box, a frame drawn around a digit): hollow marks
    with another mark inside. A lone hollow mark is kept: it is a 0."""
    b = np.array([s.box for s in segs])
    inside = (  # inside[i, j]: segment j's box lies within segment i's
        (b[None, :, 0] >= b[:, None, 0])
        & (b[None, :, 1] >= b[:, None, 1])
        & (b[None, :, 2] <= b[:, None, 2])
        & (b[None, :, 3] <= b[:, None, 3])
    )
    np.fill_diagonal(inside, False)
    encloses = np.asarray(inside.any(1))
    return [s for i, s in enumerate(segs) if not (encloses[i] and _hollow(s))]


def components(mask: np.ndarray) -> list[Segment]:
    """8-connected components of a boolean image, frames and specks removed."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return []
    top, left = int(rows[0]), int(cols[0])  # label only the ink's bounding box: the same components, cheaper
    labels, n = ndi.label(mask[top : rows[-1] + 1, left : cols[-1] + 1], structure=_EIGHT_CONNECTED)
    if n == 0:
        return []
    areas = np.bincount(labels.ravel())[1:]
    segs = []
    for i, sl in enumerate(ndi.find_objects(labels)):
        if areas[i] < MIN_SPECK_PIXELS:
            continue
        ys, xs = sl
        box = (left + xs.start, top + ys.start, left + xs.stop, top + ys.stop)
        segs.append(Segment(box, labels[sl] == i + 1))
    if len(segs) > 1:
        segs = drop_frames(segs)
    if not segs:
        return []
    # a speck is small against the largest mark that is not a frame
    areas = np.array([int(s.mask.sum()) for s in segs])
    keep_area = max(MIN_SPECK_PIXELS, SPECK_FRACTION * areas.max())
    return [s for s, a in zip(segs, areas, strict=True) if a >= keep_area]


def merge(a: Segment, b: Segment) -> Segment:
    """One segment covering both (their masks OR-ed)."""
    x0, t = min(a.box[0], b.box[0]), min(a.box[1], b.box[1])
    r, bt = max(a.box[2], b.box[2]), max(a.box[3], b.box[3])
    mask = np.zeros((bt - t, r - x0), dtype=bool)
    for s in (a, b):
        mask[s.box[1] - t : s.box[3] - t, s.box[0] - x0 : s.box[2] - x0] |= s.mask
    return Segment((x0, t, r, bt), mask)


def _belong_together(a: Segment, b: Segment) -> bool:
    overlap = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])  # negative: the x-gap
    small_part = min(a.height, b.height) < SMALL_PART * max(a.height, b.height)
    close = overlap > -SMALL_PART_GAP * max(a.height, b.height)
    if overlap < MERGE_OVERLAP * min(a.width, b.width) and not (small_part and close):
        return False
    gap = max(a.box[1], b.box[1]) - min(a.box[3], b.box[3])  # negative when they overlap in y
    return gap <= MERGE_MAX_GAP * max(a.height, b.height)


def merge_parts(segs: list[Segment]) -> list[Segment]:
    """Merge the parts of broken digits until no two parts belong together."""
    segs = list(segs)
    merged = True
    while merged:
        merged = False
        for i in range(len(segs)):
            for j in range(i + 1, len(segs)):
                if _belong_together(segs[i], segs[j]):
                    segs[i] = merge(segs[i], segs[j])
                    del segs[j]
                    merged = True
                    break
            if merged:
                break
    return segs


def split_candidates(seg: Segment, count: int = 1) -> list[tuple[list[Segment], float]]:
    """Up to ``count`` plausible cuts of a segment into two digits, most plausible first.

    Each is (two pieces, ink at the cut / median ink per column). A cut may not cross a loop,
    nor leave a flag or a tail; none at all when no cut leaves two digit-like pieces.
    """
    h, w = seg.height, seg.width
    proj = seg.mask.sum(0).astype(np.float64)  # ink per column
    proj = ndi.uniform_filter1d(proj, size=max(1, h // 20) * 2 + 1)  # ignore one-column wiggles
    lo, hi = int(MIN_PIECE_ASPECT * h), w - int(MIN_PIECE_ASPECT * h)
    if hi <= lo:
        return []
    # Prefer cuts near where a digit of the usual width would end: a mild pull toward
    # multiples of DIGIT_ASPECT * h keeps a wide digit from being cut anywhere thin.
    cols = np.arange(lo, hi)
    n = max(2, round(w / (DIGIT_ASPECT * h)))
    expected = np.arange(1, n) * w / n
    pull = np.min(np.abs(cols[:, None] - expected[None, :]), axis=1) / (w / n)
    score = proj[lo:hi] / max(proj.max(), 1.0) + 0.3 * pull
    # Never cut through a loop: a column crossing a hole (the inside of a 0, 6, 8, 9) is inside one digit.
    holes = ndi.binary_opening(ndi.binary_fill_holes(seg.mask) & ~seg.mask)  # pinholes are not loops
    score[holes.any(0)[lo:hi]] = np.inf
    median = max(float(np.median(proj[proj > 0])), 1e-6)
    x0, t = seg.box[0], seg.box[1]
    found: list[tuple[list[Segment], float]] = []
    cuts: list[int] = []
    for k in np.argsort(score, kind="stable"):
        if len(found) == count or not np.isfinite(score[k]):
            break
        cut = int(cols[k])
        if any(abs(cut - c) < CUT_SEPARATION * h for c in cuts):
            continue
        cuts.append(cut)  # tried: a failed cut's neighbours fail for the same reason
        left, right = _tight(seg.mask[:, :cut], x0, t), _tight(seg.mask[:, cut:], x0 + cut, t)
        if left is None or right is None or min(left.height, right.height) < MIN_PIECE_HEIGHT * h:
            continue
        found.append(([left, right], float(proj[cut] / median)))
    return found


def split_wide(seg: Segment) -> list[Segment]:
    """Split a segment wider than one digit where a column is nearly empty, recursively.

    Only clear valleys are cut here; a wide segment without one (two digits touching
    along a stroke, or one wide 0) gets ``alternative`` from ``offer_splits`` instead,
    and the predictor lets the model judge which reading is better.
    """
    if seg.width <= VALLEY_ASPECT * seg.height:
        return [seg]
    found = split_candidates(seg)
    if not found or found[0][1] > VALLEY_RATIO:
        return [seg]
    return [q for p in found[0][0] for q in split_wide(p)]


def offer_splits(segs: list[Segment]) -> None:
    """Attach two-digit readings to every segment wide enough to be two touching digits."""
    for seg in segs:
        if seg.width > ALTERNATIVE_ASPECT * seg.height:
            seg.alternatives = [pieces for pieces, _ in split_candidates(seg, CUT_CANDIDATES)]


def offer_joins(segs: list[Segment]) -> None:
    """Attach a one-digit reading to every pair of close neighbours that could be one digit.

    A pen lifted mid-digit can leave parts side by side that ``merge_parts`` keeps apart (an
    open 0 as ( and ), a 5's flag beside its body); ``segs`` are in reading order.
    """
    for a, b in zip(segs, segs[1:], strict=False):  # neighbours
        joined = merge(a, b)
        if b.box[0] - a.box[2] < JOIN_GAP * max(a.height, b.height) and joined.width <= JOIN_ASPECT * joined.height:
            a.merged_with_next = joined


def drop_small_marks(segs: list[Segment]) -> list[Segment]:
    """Drop stray marks far smaller than the largest digit (dots, dashes, noise blobs)."""
    if len(segs) < 2:
        return segs
    areas = [int(s.mask.sum()) for s in segs]
    max_area, max_h = max(areas), max(s.height for s in segs)
    return [
        s
        for s, a in zip(segs, areas, strict=True)
        if not (a < SMALL_MARK_AREA * max_area and s.height < SMALL_MARK_HEIGHT * max_h)
    ]


def segment_digits(mask: np.ndarray, *, multi: bool = True) -> list[Segment]:
    """Find the digits in a boolean ink mask (True = ink), ordered left to right.

    Args:
        mask: bool (H, W), True where there is ink.
        multi: False treats all ink (specks removed) as one digit.

    Returns:
        One ``Segment`` per digit; empty when there is no ink. Wide segments carry
        ``alternatives`` (two-digit readings) and close neighbours ``merged_with_next``
        (a one-digit reading), for the model to judge.
    """
    segs = components(mask)
    if not segs:
        return []
    segs = drop_small_marks(merge_parts(segs))
    if not multi:
        one = segs[0]
        for s in segs[1:]:
            one = merge(one, s)
        return [one]
    segs = [piece for s in segs for piece in split_wide(s)]
    offer_splits(segs)
    segs.sort(key=lambda s: (s.box[0] + s.box[2]) / 2)
    offer_joins(segs)
    return segs
