"""Realistic handwriting the model has not seen as it is: MNIST *test* digits re-rendered.

Four kinds, each a folder of image files plus ``manifest.csv`` (file, label, kind):

- ``photo``: a phone photo of a digit written on paper with a pen (strokes kept whole, thin to
  thick): dark ink on light, unevenly lit (gradient and vignette), enlarged to 200-400 px, off-centre, slightly rotated, blurred,
  noisy, JPEG-compressed, RGB.
- ``canvas``: a digit drawn with a mouse or pen on a 280 px browser canvas: the digit's
  skeleton (strokes kept whole, loops open, filled loops hollowed, thinning spurs pruned)
  redrawn with a thin to thick brush (digits written with a marker, ~11% of MNIST, keep
  their own thick strokes), black on white, or black or white strokes
  on a transparent background (RGBA PNG, as ``canvas.toBlob`` gives).
- ``number``: 2-5 digits in a row, a written number, photographed like ``photo``; gaps
  of 0.1-0.5x the digit height, and one gap in seven 0.01-0.08x (nearly touching; with
  blur and thick pens some do touch).
- ``sheet``: a ``photo`` with more in view (``SETTINGS``): ruled or squared paper, a box
  around the digit, the desk around the sheet or along one of its edges, a hard shadow across it.

Everything is drawn from a seed, one generator per image, so image i is the same whatever
the count.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

KINDS = ("photo", "canvas", "number", "sheet")
SETTINGS = ("ruled", "grid", "box", "desk", "desk-edge", "shadow")  # what else a ``sheet`` photo shows
MANIFEST = "manifest.csv"
BLOB_CORE = 2.0  # ink further than this many stroke half-widths from the paper is a filled loop
MARKER_HALF_WIDTH = 0.09  # strokes wider than 2x this of the digit's height: drawn with a marker (~11% of MNIST)
MAX_DIGITS = 5  # the longest number
PEN_FLOOR = 0.15  # the faintest enlarged MNIST ink that is still part of a stroke


@dataclass
class Sample:
    image: Image.Image
    label: str  # "7", or "2024" for a number
    kind: str
    ext: str  # file extension to save as
    setting: str = ""  # a ``sheet``'s setting (``SETTINGS``); it ends the file's name


# ---------------------------------------------------------------------------------------
# ink shapes


def _ink(digit: np.ndarray, height: int) -> np.ndarray:
    """An MNIST digit (28, 28) uint8 -> float ink (h, w) in [0, 1], cropped and scaled to ``height`` px tall."""
    a = digit.astype(np.float32) / 255.0
    rows, cols = np.flatnonzero(a.max(1) > 0.1), np.flatnonzero(a.max(0) > 0.1)
    a = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = height / a.shape[0]
    size = (max(2, round(a.shape[1] * scale)), height)
    big = np.asarray(Image.fromarray(a, mode="F").resize(size, Image.Resampling.BICUBIC))
    big = ndi.gaussian_filter(big, sigma=0.4 * scale)  # round off the 28-px staircase: pens draw curves
    return np.clip(big, 0.0, 1.0)


def _pieces(mask: np.ndarray) -> int:
    return int(ndi.label(mask, structure=np.ones((3, 3)))[1])


def _pen(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crisp pen strokes from a blurry enlarged digit: a steep ramp at a random level (thinner or thicker).

    A pen does not fade: where a thin MNIST stroke is fainter than the level (the loop of a
    light 9), the level comes down until the digit is in as few pieces as its faint ink allows
    and no faint part is left out (every faint ink pixel lies within a stroke's width of the drawing).
    """
    level = rng.uniform(0.3, 0.65)
    floor = ink > PEN_FLOOR
    whole = _pieces(floor)
    reach = float(ndi.distance_transform_edt(floor).max()) + 1.0  # the widest half-stroke, faint ink included
    while level > PEN_FLOOR + 0.05:
        drawn = ink > level
        if drawn.any() and _pieces(drawn) <= whole and float(ndi.distance_transform_edt(~drawn)[floor].max()) <= reach:
            break
        level -= 0.05
    return np.clip((ink - level) / 0.12 + 0.5, 0.0, 1.0)


def _thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning: the one-pixel skeleton of a binary shape (vectorised)."""
    m = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p2, p3, p4 = m[:-2, 1:-1], m[:-2, 2:], m[1:-1, 2:]
            p5, p6, p7 = m[2:, 2:], m[2:, 1:-1], m[2:, :-2]
            p8, p9 = m[1:-1, :-2], m[:-2, :-2]
            ring = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
            b = sum(ring[:8])
            a = sum(((ring[i] == 0) & (ring[i + 1] == 1)).astype(np.uint8) for i in range(8))
            if step == 0:
                c1, c2 = p2 * p4 * p6, p4 * p6 * p8
            else:
                c1, c2 = p2 * p4 * p8, p2 * p6 * p8
            delete = (m[1:-1, 1:-1] == 1) & (b >= 2) & (b <= 6) & (a == 1) & (c1 == 0) & (c2 == 0)
            if delete.any():
                m[1:-1, 1:-1][delete] = 0
                changed = True
        if not changed:
            return m[1:-1, 1:-1].astype(bool)


def _stroke_mask(ink: np.ndarray) -> np.ndarray:
    """The digit's strokes as a person drew them: the level that keeps them in one piece, loops open.

    A single cut of an enlarged MNIST digit breaks its faint strokes into dashes (a 9 whose
    loop fades out) or fills its small loops (an 8 becomes a bar); a pen on a canvas does
    neither. Of a few levels, take the one with the fewest pieces, then the most loops.
    """

    def score(mask: np.ndarray) -> tuple[int, int]:  # fewer pieces first, then more loops
        _, pieces = ndi.label(mask, structure=np.ones((3, 3)))
        _, holes = ndi.label(ndi.binary_fill_holes(mask) & ~mask)
        return pieces, -holes

    return min((ink > level for level in (0.4, 0.3, 0.5, 0.2, 0.15)), key=score)  # the first of equal scores


def _prune(skel: np.ndarray, length: int) -> np.ndarray:
    """Remove skeleton spurs shorter than ``length`` px (morphological pruning).

    Thinning a thick stroke leaves short side branches at its corners and bumps; a mouse
    stroke has none. Strip ``length`` px from every free end, then grow the ends that are
    left back along the original skeleton: spurs (which ended at a junction) stay gone.
    """
    ring = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.uint8)
    pruned = skel.copy()
    for _ in range(length):
        ends = pruned & (ndi.convolve(pruned.astype(np.uint8), ring, mode="constant") <= 1)
        if not ends.any():
            break
        pruned &= ~ends
    if not pruned.any():  # a short single stroke (a 1): nothing to prune
        return skel
    front = pruned & (ndi.convolve(pruned.astype(np.uint8), ring, mode="constant") == 1)
    grown = pruned.copy()
    for _ in range(length):
        front = ndi.binary_dilation(front, structure=np.ones((3, 3), bool)) & skel & ~grown
        if not front.any():
            break
        grown |= front
    return grown


def _open_blobs(mask: np.ndarray, dist: np.ndarray, skeleton: np.ndarray) -> np.ndarray:
    """Hollow out ink far thicker than the strokes: a filled loop becomes a loop again.

    A thick pen fills the small loops of an 8, 9 or 6 in many MNIST digits; thinning such a
    blob gives a line, and the redrawn digit is another digit (an 8 becomes a 9). A person
    drawing with a thin pen draws the loop, so the blob's core (further than BLOB_CORE stroke
    half-widths from the paper) is cut out and the ring around it is what gets thinned.
    """
    half_width = float(np.median(dist[skeleton]))  # the typical stroke's half-width
    core = dist > BLOB_CORE * max(half_width, 1.0)
    return mask & ~core if core.any() else mask


def _brush(ink: np.ndarray, radius: float) -> np.ndarray:
    """Redraw a digit along its skeleton with a round brush of ``radius`` px, anti-aliased.

    A digit written with strokes far thicker than MNIST's usual (a marker) has no one thin
    drawing: its skeleton is another shape (a thick 2 thins to a Z, a thick 6 to an L). Such a
    digit is drawn as it is, with the marker: its own stroke shape, anti-aliased.
    """
    mask = _stroke_mask(ink)
    dist = ndi.distance_transform_edt(mask)
    skeleton = _thin(mask)
    if not skeleton.any():
        return mask.astype(np.float32)
    if float(np.median(dist[skeleton])) > MARKER_HALF_WIDTH * ink.shape[0]:
        padded = np.pad(mask, 2)
        outline = ndi.distance_transform_edt(~padded) - ndi.distance_transform_edt(padded)  # signed distance
        return np.clip(0.5 - outline, 0.0, 1.0)  # the mask with a one-pixel anti-aliased edge
    mask = _open_blobs(mask, dist, skeleton)
    skeleton = _prune(_thin(mask), length=max(3, int(0.08 * max(ink.shape))))
    pad = int(np.ceil(radius)) + 2
    dist = ndi.distance_transform_edt(~np.pad(skeleton, pad))
    return np.clip(radius + 0.5 - dist, 0.0, 1.0)


def _place(canvas_hw: tuple[int, int], ink: np.ndarray, rng: np.random.Generator, margin: float) -> np.ndarray:
    """Ink pasted at a random position on an empty (H, W) field, ``margin`` of the field kept free."""
    H, W = canvas_hw
    h, w = ink.shape
    out = np.zeros((H, W), dtype=np.float32)
    my, mx = int(margin * H), int(margin * W)
    top = int(rng.integers(my, max(my, H - h - my) + 1)) if H - h - 2 * my > 0 else max(0, (H - h) // 2)
    left = int(rng.integers(mx, max(mx, W - w - mx) + 1)) if W - w - 2 * mx > 0 else max(0, (W - w) // 2)
    hh, ww = min(h, H - top), min(w, W - left)
    out[top : top + hh, left : left + ww] = ink[:hh, :ww]
    return out


def _rotate(ink: np.ndarray, degrees: float) -> np.ndarray:
    return np.clip(ndi.rotate(ink, degrees, reshape=False, order=1, mode="constant"), 0.0, 1.0)


# ---------------------------------------------------------------------------------------
# a photo of paper


def _photograph(
    ink: np.ndarray, rng: np.random.Generator, page: np.ndarray | None = None, shade: np.ndarray | None = None
) -> Image.Image:
    """Ink (H, W) on paper under uneven light, through a cheap camera: an RGB JPEG-decoded image.

    ``page``: (H, W, 3) factors on the paper's colour where it is not plain (printed lines, a box,
    the desk around the sheet); ``shade``: (H, W) factors on the light (a hard shadow).
    """
    H, W = ink.shape
    paper = rng.uniform(0.7, 0.97) * np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 1.0)])
    pen = rng.choice([np.array([0.08, 0.08, 0.1]), np.array([0.1, 0.12, 0.45]), np.array([0.25, 0.25, 0.25])])
    pen = pen * rng.uniform(0.5, 1.2)
    if page is not None:
        paper = paper * page
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    yy, xx = yy / H - 0.5, xx / W - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 1.0 - rng.uniform(0.0, 0.45) * (0.5 + np.cos(angle) * xx + np.sin(angle) * yy)
    cy, cx = rng.uniform(-0.3, 0.3, size=2)
    vignette = 1.0 - rng.uniform(0.0, 0.5) * ((xx - cx) ** 2 + (yy - cy) ** 2) / 0.5
    light = np.clip(gradient * vignette, 0.2, 1.0)[..., None]
    if shade is not None:
        light = light * shade[..., None]
    rgb = light * (paper * (1.0 - ink[..., None]) + pen * ink[..., None])
    sigma = rng.uniform(0.3, 1.8)
    rgb = ndi.gaussian_filter(rgb, sigma=(sigma, sigma, 0))
    rgb = rgb + rng.normal(0.0, rng.uniform(0.005, 0.05), size=rgb.shape)
    img = Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), mode="RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(35, 92)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def photo(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A phone photo of one digit written on paper."""
    H, W = int(rng.integers(200, 401)), int(rng.integers(200, 401))
    ink = _pen(_ink(digit, int(rng.uniform(0.35, 0.75) * min(H, W))), rng)
    ink = _rotate(np.pad(ink, 8), rng.uniform(-12, 12))
    return _photograph(_place((H, W), ink, rng, margin=0.04), rng)


def _page(H: int, W: int, setting: str, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """What is printed on the page, or in view beside it, as factors on the paper's colour; and the
    (top, left, bottom, right) area left for the digit."""
    page = np.ones((H, W, 3), dtype=np.float32)
    top, left, bottom, right = 0, 0, H, W
    line = np.array([rng.uniform(0.55, 0.8), rng.uniform(0.7, 0.9), rng.uniform(0.85, 1.0)])  # light blue-green
    if setting in ("ruled", "grid"):
        step = int(rng.integers(16, 41))
        width = int(rng.integers(1, 3))
        for y in range(int(rng.integers(0, step)), H, step):
            page[y : y + width] = line
        if setting == "grid":
            for x in range(int(rng.integers(0, step)), W, step):
                page[:, x : x + width] = line
    elif setting == "box":  # a form's box, printed or drawn, around the digit
        m = int(rng.uniform(0.03, 0.12) * min(H, W))
        width = int(rng.integers(1, 5))
        dark = rng.uniform(0.1, 0.6)
        page[m : H - m, m : m + width] = page[m : H - m, W - m - width : W - m] = dark
        page[m : m + width, m : W - m] = page[H - m - width : H - m, m : W - m] = dark
        top, left, bottom, right = m + width + 4, m + width + 4, H - m - width - 4, W - m - width - 4
    elif setting in ("desk", "desk-edge"):  # the table the sheet lies on, all round or along one edge
        desk = rng.uniform(0.15, 0.5) * np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.5, 1.0)])
        desk = desk * (1.0 + rng.normal(0.0, 0.04, size=(H, W, 1)))  # its grain
        edges = (0, 1, 2, 3) if setting == "desk" else (int(rng.integers(4)),)  # top, left, bottom, right
        cut = [int(rng.uniform(0.06, 0.18) * (H if e % 2 == 0 else W)) if e in edges else 0 for e in range(4)]
        top, left, bottom, right = cut[0], cut[1], H - cut[2], W - cut[3]
        sheet = np.zeros((H, W), dtype=bool)
        sheet[top:bottom, left:right] = True
        page[~sheet] = desk[~sheet]
        top, left, bottom, right = top + 6, left + 6, bottom - 6, right - 6
    return page, (int(top), int(left), int(bottom), int(right))


def _hard_shadow(H: int, W: int, rng: np.random.Generator) -> np.ndarray:
    """A phone's or a hand's shadow: a half-plane 40-75% as bright, its edge a step (or a pixel or two of blur)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    d = np.cos(angle) * (xx - W / 2) + np.sin(angle) * (yy - H / 2)
    edge = np.quantile(d, rng.uniform(0.25, 0.5))  # it covers a quarter to a half of the picture
    inside = ndi.gaussian_filter((d < edge).astype(np.float32), rng.uniform(0.0, 1.5))
    return 1.0 - (1.0 - rng.uniform(0.4, 0.75)) * inside


def sheet(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A phone photo of a digit on a page with more in view: ruled or squared paper, a box around
    the digit, the desk around the sheet or along one edge, or a hard shadow across it; and which."""
    setting = SETTINGS[int(rng.integers(len(SETTINGS)))]
    H, W = int(rng.integers(220, 401)), int(rng.integers(220, 401))
    page, (top, left, bottom, right) = _page(H, W, setting, rng)
    room = min(bottom - top, right - left)
    ink = _pen(_ink(digit, int(rng.uniform(0.45, 0.75) * room)), rng)
    ink = _rotate(np.pad(ink, 8), rng.uniform(-8, 8))
    full = np.zeros((H, W), dtype=np.float32)
    full[top:bottom, left:right] = _place((bottom - top, right - left), ink, rng, margin=0.04)
    shade = _hard_shadow(H, W, rng) if setting == "shadow" else None
    return _photograph(full, rng, page=page, shade=shade), setting


def canvas(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A digit drawn on a 280 px browser canvas with a mouse or pen, thin to thick brush."""
    size = 280
    height = int(rng.uniform(0.45, 0.85) * size)
    radius = float(rng.choice([rng.uniform(1.5, 3.0), rng.uniform(3.0, 9.0), rng.uniform(9.0, 15.0)]))
    ink = _ink(digit, height)
    if ink.shape[1] > 0.85 * size:  # a wide digit: shrink it to fit, as a person would draw it
        ink = _ink(digit, int(height * 0.85 * size / ink.shape[1]))
    stroke = _brush(ink, radius)
    stroke = _rotate(stroke, rng.uniform(-8, 8))
    stroke = _place((size, size), stroke, rng, margin=0.02)
    style = rng.choice(["black-on-white", "white-on-transparent", "black-on-transparent"])
    v = np.round(stroke * 255).astype(np.uint8)
    if style == "black-on-white":
        return Image.fromarray(255 - v, mode="L").convert("RGB")
    color = 255 if style == "white-on-transparent" else 0
    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    rgba[..., :3] = color
    rgba[..., 3] = v
    return Image.fromarray(rgba, mode="RGBA")


def number(digits: list[np.ndarray], rng: np.random.Generator) -> Image.Image:
    """A row of digits written on paper and photographed: gaps from nearly touching to wide."""
    height = int(rng.integers(60, 130))
    inks = [_pen(_ink(d, int(height * rng.uniform(0.85, 1.1))), rng) for d in digits]
    gaps = [int(height * (rng.uniform(0.01, 0.08) if rng.random() < 0.15 else rng.uniform(0.1, 0.5))) for _ in inks[1:]]
    row_h = max(i.shape[0] for i in inks) + height // 4
    row_w = sum(i.shape[1] for i in inks) + sum(gaps)
    row = np.zeros((row_h, row_w), dtype=np.float32)
    x = 0
    for k, ink in enumerate(inks):
        top = int(rng.integers(0, row_h - ink.shape[0] + 1))  # a wavering baseline
        row[top : top + ink.shape[0], x : x + ink.shape[1]] = np.maximum(
            row[top : top + ink.shape[0], x : x + ink.shape[1]], ink
        )
        x += ink.shape[1] + (gaps[k] if k < len(gaps) else 0)
    row = _rotate(np.pad(row, 10), rng.uniform(-5, 5))
    H = int(row.shape[0] * rng.uniform(1.3, 2.5))
    W = int(row.shape[1] * rng.uniform(1.1, 1.4))
    return _photograph(_place((H, W), row, rng, margin=0.03), rng)


# ---------------------------------------------------------------------------------------
# a whole test set


def make_sample(kind: str, images: np.ndarray, labels: np.ndarray, seed: int, i: int) -> Sample:
    """Sample ``i`` of a kind: its own generator, so it does not depend on how many are made."""
    rng = np.random.default_rng([seed, KINDS.index(kind), i])
    # Distinct digits: image i takes its digits from one seeded permutation of the set, so a set
    # of n images (n * MAX_DIGITS for numbers) up to the set's size uses each digit once.
    order = np.random.default_rng([seed, KINDS.index(kind)]).permutation(len(images))
    if kind == "number":
        n = int(rng.integers(2, MAX_DIGITS + 1))
        idx = order[(MAX_DIGITS * i + np.arange(n)) % len(images)]
        label = "".join(str(int(labels[j])) for j in idx)
        return Sample(number([images[j] for j in idx], rng), label, kind, "jpg")
    j = int(order[i % len(images)])
    if kind == "photo":
        return Sample(photo(images[j], rng), str(int(labels[j])), kind, "jpg")
    if kind == "canvas":
        return Sample(canvas(images[j], rng), str(int(labels[j])), kind, "png")
    if kind == "sheet":
        image, setting = sheet(images[j], rng)
        return Sample(image, str(int(labels[j])), kind, "jpg", setting)
    raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")


def generate(
    out_dir: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    kind: str,
    count: int,
    seed: int = 0,
) -> Path:
    """Write ``count`` samples of ``kind`` into ``out_dir/kind/`` with a manifest; return the manifest path.

    Args:
        out_dir: folder to write into (created).
        images: MNIST test digits, uint8 (N, 28, 28) or (N, 1, 28, 28).
        labels: their labels (N,).
        kind: one of ``KINDS``.
        count: how many images.
        seed: the same seed gives the same files.
    """
    images = np.asarray(images).reshape(-1, 28, 28)
    labels = np.asarray(labels).reshape(-1)
    folder = Path(out_dir) / kind
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        s = make_sample(kind, images, labels, seed, i)
        name = f"{kind}_{i:05d}_{s.label}{'_' + s.setting if s.setting else ''}.{s.ext}"
        if s.ext == "jpg":
            s.image.save(folder / name, quality=95)  # already JPEG-degraded; store it nearly as is
        else:
            s.image.save(folder / name)
        rows.append((name, s.label, kind))
    manifest = folder / MANIFEST
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("file", "label", "kind"))
        w.writerows(rows)
    return manifest


def read_manifest(path: str | Path) -> list[tuple[Path, str]]:
    """(file path, label) pairs from a manifest written by ``generate``."""
    path = Path(path)
    with path.open(newline="") as f:
        return [(path.parent / r["file"], r["label"]) for r in csv.DictReader(f)]
