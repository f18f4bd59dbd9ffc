"""Other people's digits made from MNIST's: the ``styles`` augmentation, on whole uint8 batches.

MNIST's writers drew thin pen strokes, wrote 1 as a bare bar, and each digit keeps its own
width-to-height ratio inside MNIST's 20-px box. Real handwriting from elsewhere differs in exactly
these ways: sets that scale each digit to fill its frame (a narrow 1 becomes a fat bar), bold pens,
slant, two-level bitmaps, 16-px scans, and 1s written with an up-stroke and a foot. A styled image
gets a random mix of these, with every random number drawn for the whole batch at once, like the
loader's other kinds (``digitlab.data.loader``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from digitlab.data.loader import _randint, _uniform, random_shift, stroke_width
from digitlab.errors import DigitlabError

STYLE_FRACTION = 0.5  # share of each batch given a style; the rest is only shifted, keeping MNIST's own look
STROKE_CHANGE = (-1, 0, 1, 2, 3)  # pixels of stroke width added (-1: thinner)
STROKE_WEIGHTS = (0.15, 0.3, 0.25, 0.15, 0.15)
ASPECT_LOG = 0.5  # the width/height ratio changes by a factor in exp(+-0.5): x0.6 to x1.65
FILL = 0.25  # chance to stretch the digit to a square box, as sets that scale digits to fill their frame do
MAX_STRETCH = 2.5  # a digit stretched to a square box widens (or narrows) at most this much
BOX_PX = (15.0, 20.0)  # the longer side after the stretch, at 28 px (MNIST frames digits in 20 px)
SHEAR = 0.3  # slant: x moves by up to 0.3 of y
ROTATE_DEG = 8.0
SHIFT_PX = 2.0
BINARY = 0.25  # chance of a two-level image (bitmaps, hard scans), at a random threshold
LOW_RES = 0.25  # chance of passing through 16-22 px and back (a digit of 11-16 px: small scans)
LOW_RES_SIDES = (16, 18, 20, 22)
FLAG = 0.5  # chance that a 1 gets the continental up-stroke (and half of those a foot too)
ONE = 1  # the class that gets the up-stroke


def _ink_box(x: torch.Tensor, threshold: float = 64.0) -> tuple[torch.Tensor, ...]:
    """Per image, the inclusive pixel box (x0, x1, y0, y1) of ink above ``threshold``; the frame when empty."""
    ink = x[:, 0] > threshold  # (N, H, W)
    _, h, w = ink.shape
    rows, cols = ink.any(2), ink.any(1)
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    y0 = torch.where(rows, ar_h, h).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1)
    x0 = torch.where(cols, ar_w, w).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1)
    empty = y1 < 0
    y0, x0 = y0.masked_fill(empty, 0), x0.masked_fill(empty, 0)
    y1, x1 = y1.masked_fill(empty, h - 1), x1.masked_fill(empty, w - 1)
    return x0.float(), x1.float(), y0.float(), y1.float()


def _pixel_grid(h: int, w: int, device) -> torch.Tensor:
    """(H, W, 2) pixel coordinates as (x, y)."""
    ys = torch.arange(h, device=device, dtype=torch.float32)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    return torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)], -1)


def segment_ink(h: int, w: int, p0: torch.Tensor, p1: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """One anti-aliased line per image, float (N, 1, H, W) in [0, 255].

    ``p0``, ``p1``: (N, 2) end points as (x, y) pixels; ``radius``: (N,) half the stroke width.
    """
    grid = _pixel_grid(h, w, p0.device).view(1, h, w, 2)
    a, d = p0.view(-1, 1, 1, 2), (p1 - p0).view(-1, 1, 1, 2)
    t = (((grid - a) * d).sum(-1, keepdim=True) / (d * d).sum(-1, keepdim=True).clamp_min(1e-6)).clamp(0, 1)
    dist = (grid - a - t * d).norm(dim=-1)  # (N, H, W): distance to the nearest point of the segment
    return ((radius.view(-1, 1, 1) + 0.5 - dist).clamp(0, 1) * 255).unsqueeze(1)


def _row_centre(x: torch.Tensor, y: torch.Tensor, rows: int = 3, down: bool = True) -> torch.Tensor:
    """Per image, the ink's mean column over ``rows`` rows from row ``y`` (downwards, or upwards)."""
    h, w = x.shape[-2:]
    r = torch.arange(h, device=x.device).view(1, h).float()
    lo, hi = (y, y + rows - 1) if down else (y - rows + 1, y)
    band = ((r >= lo.view(-1, 1)) & (r <= hi.view(-1, 1))).float()  # (N, H)
    weight = x[:, 0] * band.unsqueeze(2)  # (N, H, W)
    cols = torch.arange(w, device=x.device, dtype=torch.float32)
    return (weight.sum(1) * cols).sum(1) / weight.sum((1, 2)).clamp_min(1.0)


def continental_one(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """1s with the long up-stroke from the top down to the left, and for half of them a foot.

    The strokes are as wide as the 1's own bar (its ink over its height), so a bold 1 gets a bold flag.
    """
    n, _, h, w = x.shape
    dev = x.device
    x0, x1, y0, y1 = _ink_box(x)
    height = (y1 - y0 + 1).clamp_min(4.0)
    radius = ((x.float().sum((1, 2, 3)) / 255.0 / height) / 2).clamp(0.7, 2.5)
    top = torch.stack([_row_centre(x, y0), y0 + radius], -1)
    length = _uniform(0.25, 0.45, n, generator, dev) * height
    angle = _uniform(35.0, 65.0, n, generator, dev) * (math.pi / 180)
    flag_end = top + torch.stack([-length * torch.cos(angle), length * torch.sin(angle)], -1)
    ink = segment_ink(h, w, top, flag_end, radius)
    foot = _uniform(0.0, 1.0, n, generator, dev) < 0.5
    half = _uniform(0.2, 0.35, n, generator, dev) * height
    bottom = torch.stack([_row_centre(x, y1, down=False), y1 - radius], -1)
    dx = torch.stack([half, torch.zeros_like(half)], -1)
    foot_ink = segment_ink(h, w, bottom - dx, bottom + dx, radius) * foot.view(-1, 1, 1, 1)
    return torch.maximum(x.float(), torch.maximum(ink, foot_ink))


def _change_stroke(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Thinner by one pixel, unchanged, or bolder by 1-3 pixels (a max filter of that size plus one)."""
    n = x.shape[0]
    weights = torch.tensor(STROKE_WEIGHTS)
    choice = torch.multinomial(weights, n, replacement=True, generator=generator).to(x.device)
    out = x.clone()
    for i, k in enumerate(STROKE_CHANGE):
        sel = choice == i
        if k == 0 or not bool(sel.any()):
            continue
        if k < 0:
            out[sel] = stroke_width(x[sel], grow=False)
        else:
            out[sel] = F.max_pool2d(F.pad(x[sel], (0, k, 0, k)), k + 1, stride=1)
    return out


def _reframe(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Stretch each digit's box by independent x and y scales (some to a square), slant, rotate and move it.

    The digit's box is mapped to a box of ``BOX_PX`` on its longer side, as preprocessing frames any digit,
    so a narrow digit made wide reaches the model the way a frame-filling bitmap does.
    """
    n, _, h, w = x.shape
    dev = x.device
    x0, x1, y0, y1 = _ink_box(x)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    ratio = torch.exp(_uniform(-ASPECT_LOG, ASPECT_LOG, n, generator, dev))  # width factor over height factor
    fill = _uniform(0.0, 1.0, n, generator, dev) < FILL
    square = (bh / bw) * torch.exp(_uniform(-0.1, 0.1, n, generator, dev))
    ratio = torch.where(fill, square, ratio).clamp(1 / MAX_STRETCH, MAX_STRETCH)
    sx, sy = ratio.sqrt(), ratio.rsqrt()
    k = _uniform(*BOX_PX, n, generator, dev) / torch.maximum(bw * sx, bh * sy)
    sx, sy = sx * k, sy * k
    shear = _uniform(-SHEAR, SHEAR, n, generator, dev)
    angle = _uniform(-ROTATE_DEG, ROTATE_DEG, n, generator, dev) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward map M = rotation @ shear @ diag(sx, sy); grid_sample needs output -> input, M^-1
    a, b = cos * sx, (cos * shear - sin) * sy
    c, d = sin * sx, (sin * shear + cos) * sy
    det = a * d - b * c
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det.view(n, 1, 1)  # (N, 2, 2)
    centre_in = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2], -1)
    centre_out = torch.stack(
        [
            (w - 1) / 2 + _uniform(-SHIFT_PX, SHIFT_PX, n, generator, dev),
            (h - 1) / 2 + _uniform(-SHIFT_PX, SHIFT_PX, n, generator, dev),
        ],
        -1,
    )
    q = _pixel_grid(h, w, dev).view(1, h * w, 2) - centre_out.view(n, 1, 2)
    source = centre_in.view(n, 1, 2) + q @ inv.transpose(1, 2)  # (N, H*W, 2) input pixels
    size = torch.tensor([w, h], device=dev, dtype=torch.float32)
    grid = ((2 * source + 1) / size - 1).view(n, h, w, 2)  # align_corners=False units
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _binarise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Some images to two levels at a random threshold, as bitmaps are."""
    n = x.shape[0]
    sel = (_uniform(0.0, 1.0, n, generator, x.device) < BINARY).view(-1, 1, 1, 1)
    threshold = _uniform(70.0, 180.0, n, generator, x.device).view(-1, 1, 1, 1)
    return torch.where(sel, (x > threshold).float() * 255, x)


def _low_res(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Some images down to 16-22 px and back up, with their brightest pixel restored to full ink."""
    n, _, h, w = x.shape
    sel = _uniform(0.0, 1.0, n, generator, x.device) < LOW_RES
    side = _randint(0, len(LOW_RES_SIDES) - 1, n, generator, x.device)
    out = x.clone()
    for i, s in enumerate(LOW_RES_SIDES):
        pick = sel & (side == i)
        if not bool(pick.any()):
            continue
        small = F.interpolate(x[pick], size=(s, s), mode="area")
        up = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        out[pick] = up * (255.0 / up.amax((1, 2, 3), keepdim=True).clamp_min(1.0))
    return out


def random_styles(
    x: torch.Tensor, generator: torch.Generator | None, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Give ``STYLE_FRACTION`` of a uint8 digit batch (N, 1, H, W) other writers' styles; shift the rest.

    A styled image: the continental 1 (for 1s, when ``labels`` are given), a stroke width change, an
    aspect-ratio stretch to a freshly framed box with slant, rotation and shift, then perhaps two levels
    and perhaps a low-resolution pass. Returns uint8 of the same shape; ``labels`` are not changed.

    Raises:
        DigitlabError: the images are not one-channel (the styles are digit writing styles).
    """
    n, c, _, _ = x.shape
    if c != 1:
        raise DigitlabError(f"the styles augmentation is for one-channel digit images, not {c} channels")
    if labels is not None and labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} images")
    out = random_shift(x, generator)
    pick = _uniform(0.0, 1.0, n, generator, x.device) < STYLE_FRACTION
    if not bool(pick.any()):
        return out
    xs = x[pick].float()
    if labels is not None:
        flag = (labels[pick].to(x.device) == ONE) & (_uniform(0.0, 1.0, xs.shape[0], generator, x.device) < FLAG)
        if bool(flag.any()):
            xs[flag] = continental_one(xs[flag], generator)
    xs = _reframe(_change_stroke(xs, generator), generator)
    xs = _low_res(_binarise(xs, generator), generator)
    out[pick] = xs.round_().clamp_(0, 255).to(torch.uint8)
    return out
