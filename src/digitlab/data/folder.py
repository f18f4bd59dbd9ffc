"""An image folder as a dataset: ``root/<class>/*.png`` (or ``root/train/<class>``, ``root/test/<class>``).

Every image is decoded once, converted to gray or RGB, resized to a square, and stacked
into the same uint8 tensors as MNIST; from there on it takes the same path. Files that
cannot be decoded are skipped with a warning and listed in ``ImageData.skipped``.
"""

from __future__ import annotations

import logging
import os
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from digitlab.data.base import ImageData, channel_stats
from digitlab.errors import DigitlabError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
DEFAULT_SIZE = {True: 28, False: 32}  # gray: MNIST-sized; colour: CIFAR-sized
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed, so the split of a folder is the same on every run
MAX_WORKERS = 4  # PIL releases the GIL while decoding; more threads than this rarely help


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _class_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _images_in(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if _is_image(Path(f))]
    return found


def _scan(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]] | None]:
    """Class names and (file, label) lists; the test list is None when root has no train/test split."""
    split = (root / "train").is_dir() and (root / "test").is_dir()
    train_root = root / "train" if split else root
    classes, train = [], []
    for d in _class_dirs(train_root):
        files = _images_in(d)
        if not files:
            log.warning("class folder %s has no images; ignored", d)
            continue
        train += [(f, len(classes)) for f in files]
        classes.append(d.name)
    if not classes:
        raise DigitlabError(
            f"{train_root} has no class folders with images: expected {train_root}/<class name>/<image files> "
            f"({', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})"
        )
    if len(classes) < 2:
        raise DigitlabError(f"{train_root} has one class folder ({classes[0]!r}); a classifier needs at least two")
    if not split:
        return classes, train, None
    test = []
    for d in _class_dirs(root / "test"):
        files = _images_in(d)
        if files and d.name not in classes:
            raise DigitlabError(f"{d}: class {d.name!r} is in test/ but not in train/ (train classes: {classes})")
        test += [(f, classes.index(d.name)) for f in files]
    return classes, train, test


def _palette_is_gray(im: Image.Image) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def _probe_gray(path: Path) -> bool:
    """Whether an image is gray, from its header (cheap: no pixel data is decoded)."""
    with Image.open(path) as im:
        return im.mode in GRAY_MODES or (im.mode == "P" and _palette_is_gray(im))


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float gray to 8 bits; PIL's own convert('L') clips instead of scaling."""
    a = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        a = a * 255.0 if a.size and a.max() <= 1.0 else a
    elif a.size and (im.mode.startswith("I;16") or a.max() > 255):
        a = a / 257.0  # 0..65535 -> 0..255
    return Image.fromarray(np.rint(a).clip(0, 255).astype(np.uint8), mode="L")


def _decode(path: Path, gray: bool, size: int) -> np.ndarray:
    """One file to uint8 (size, size) or (size, size, 3)."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)  # phone photos store rotation in EXIF
        if im.mode in ("I", "F") or im.mode.startswith("I;16"):
            im = _high_depth_to_l(im)
        if im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info:
            # Transparent background means paper: composite on white, not on black.
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        im = im.convert("L" if gray else "RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)  # antialiased when shrinking
        return np.asarray(im, dtype=np.uint8)


def _try(fn, *args):
    try:
        return fn(*args), None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "skip this file"
        return None, f"{type(exc).__name__}: {exc}"


def _map(fn, items: list, workers: int, progress: bool, what: str) -> list:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda a: _try(fn, *a), items)
        if progress and len(items) > 2000:
            from rich.progress import track

            results = track(results, total=len(items), description=what, transient=True)
        return list(results)


def _split(labels: np.ndarray, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a fixed-seed 20% to test (at least one image when a class has two or more)."""
    train_idx, test_idx = [], []
    for c, name in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        rng = np.random.default_rng([SPLIT_SEED, zlib.crc32(name.encode())])  # independent of other classes
        idx = idx[rng.permutation(len(idx))]
        k = max(1, int(round(len(idx) * TEST_FRACTION))) if len(idx) >= 2 else 0
        test_idx.append(idx[:k])
        train_idx.append(idx[k:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))


def load_folder(
    root: str | os.PathLike,
    *,
    grayscale: bool | None = None,
    image_size: int | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> ImageData:
    """Load an image folder into uint8 tensors.

    Args:
        root: ``root/<class>/<images>``, or ``root/train/<class>`` + ``root/test/<class>``.
        grayscale: True/False forces gray/RGB; None: gray if every image is gray.
        image_size: side of the square images (None: 28 for gray, 32 for RGB).
        progress: show a progress bar while decoding large folders.
        workers: decoding threads (None: up to 4).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DigitlabError(f"image folder {root} does not exist (or is not a folder)")
    classes, train_files, test_files = _scan(root)
    files = train_files + (test_files or [])
    workers = workers or max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    skipped: list[str] = []

    if grayscale is None:
        probes = _map(_probe_gray, [(f,) for f, _ in files], workers, progress, "checking images")
        keep = [i for i, (_, err) in enumerate(probes) if err is None]
        skipped += [f"{files[i][0]}: {err}" for i, (_, err) in enumerate(probes) if err is not None]
        grayscale = all(probes[i][0] for i in keep)
        n_train = sum(1 for i in keep if i < len(train_files))
        files = [files[i] for i in keep]
        train_files, test_files = files[:n_train], (files[n_train:] if test_files is not None else None)
    size = image_size or DEFAULT_SIZE[bool(grayscale)]
    if size < 1:
        raise DigitlabError(f"image size must be positive, got {size}")

    decoded = _map(_decode, [(f, bool(grayscale), size) for f, _ in files], workers, progress, "decoding images")
    ok = np.array([err is None for _, err in decoded], dtype=bool)
    skipped += [f"{files[i][0]}: {err}" for i, (_, err) in enumerate(decoded) if err is not None]
    if skipped:
        msg = f"skipped {len(skipped)} unreadable image file(s) under {root}; first: {skipped[0]}"
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
    if not ok.any():
        raise DigitlabError(f"no readable images under {root} ({len(skipped)} files failed to decode)")

    arrays = np.stack([a for a, err in decoded if err is None])  # (N, H, W) or (N, H, W, 3)
    x = torch.from_numpy(arrays).unsqueeze(1) if grayscale else torch.from_numpy(arrays).permute(0, 3, 1, 2)
    x = x.contiguous()
    labels = np.array([lab for (_, lab) in files], dtype=np.int64)[ok]
    y = torch.from_numpy(labels)
    n_train_ok = int(ok[: len(train_files)].sum())
    if test_files is not None:
        train_sel, test_sel = np.arange(n_train_ok), np.arange(n_train_ok, len(labels))
    else:
        train_sel, test_sel = _split(labels, classes)
    if len(train_sel) == 0 or len(test_sel) == 0:
        raise DigitlabError(
            f"{root}: not enough readable images for a train and a test set "
            f"({len(train_sel)} train, {len(test_sel)} test); each class needs at least two images"
        )
    for c, name in enumerate(classes):
        if not (labels[train_sel] == c).any():
            warnings.warn(f"class {name!r} has no readable training images in {root}", stacklevel=2)
    tr, te = torch.from_numpy(train_sel), torch.from_numpy(test_sel)
    train_x = x[tr].contiguous()
    mean, std = channel_stats(train_x)
    return ImageData(
        name=str(root),
        train_x=train_x,
        train_y=y[tr].contiguous(),
        test_x=x[te].contiguous(),
        test_y=y[te].contiguous(),
        classes=classes,
        mean=mean,
        std=std,
        source=str(root.resolve()),
        skipped=skipped,
    )
