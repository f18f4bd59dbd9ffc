"""An image folder as a dataset: ``root/<class>/*.png`` (or ``root/train/<class>``, ``root/test/<class>``).

Every image is decoded once (``data.decode``: in parallel, through the same safe decoder as
``digitlab predict``), converted to gray or RGB, resized to a square, and stacked into the same
uint8 tensors as MNIST; from there on it takes the same path. The result is cached
(``data.imagecache``) under a key made of every file's path, size and mtime, so the next run
reads it back instead of decoding, and a changed, added or removed file decodes it again.
Files that cannot be decoded are skipped with a warning and listed in ``ImageData.skipped``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from digitlab.data import imagecache
from digitlab.data.base import ImageData, channel_stats
from digitlab.data.decode import DECODE_VERSION, Source, decode_all, default_workers, probe_all
from digitlab.errors import DigitlabError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_SIZE = {True: 28, False: 32}  # gray: MNIST-sized; colour: CIFAR-sized
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed, so the split of a folder is the same on every run
CACHE_MIN_IMAGES = 256  # smaller folders decode in a blink: no cache file for them (cache=None)


@dataclass(frozen=True)
class Listing:
    """What an image folder or archive holds, before decoding: one source and label per image."""

    classes: list[str]
    sources: list[Source]
    labels: list[int]
    n_train: int  # the first n_train sources are the training set ...
    split: bool  # ... and the rest its test set; split=False: 20% of each class is held out instead
    where: str  # the folder or archive, for messages


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _class_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _images_in(folder: str) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every image under ``folder``, recursively, in sorted order.

    Plain strings and ``os.scandir``: pathlib costs more than the stat calls on 60,000 files.
    """
    found = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir():
            found += _images_in(e.path)
        elif _is_image(e.name) and e.is_file():
            st = e.stat()
            found.append((e.path, st.st_size, st.st_mtime_ns))
    return found


def scan_folder(root: Path) -> tuple[Listing, str]:
    """The folder's listing and its fingerprint (a hash of every image's relative path, size, mtime, label)."""
    split = (root / "train").is_dir() and (root / "test").is_dir()
    train_root = root / "train" if split else root
    classes: list[str] = []
    files: list[tuple[str, int, int]] = []
    labels: list[int] = []
    for d in _class_dirs(train_root):
        found = _images_in(str(d))
        if not found:
            log.warning("class folder %s has no images; ignored", d)
            continue
        files += found
        labels += [len(classes)] * len(found)
        classes.append(d.name)
    if not classes:
        raise DigitlabError(
            f"{train_root} has no class folders with images: expected {train_root}/<class name>/<image files> "
            f"({', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})"
        )
    if len(classes) < 2:
        raise DigitlabError(f"{train_root} has one class folder ({classes[0]!r}); a classifier needs at least two")
    n_train = len(files)
    if split:
        for d in _class_dirs(root / "test"):
            found = _images_in(str(d))
            if found and d.name not in classes:
                raise DigitlabError(f"{d}: class {d.name!r} is in test/ but not in train/ (train classes: {classes})")
            files += found
            labels += [classes.index(d.name)] * len(found)
    cut = len(str(root)) + 1  # relative paths: the folder may move
    lines = "\n".join(
        f"{p[cut:]}\t{size}\t{mtime}\t{label}" for (p, size, mtime), label in zip(files, labels, strict=True)
    )
    fingerprint = hashlib.blake2b(lines.encode(), digest_size=16).hexdigest()
    listing = Listing(classes, [p for p, _, _ in files], labels, n_train, split, str(root))
    return listing, fingerprint


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


def warn_skipped(skipped: list[str], where: str) -> None:
    if skipped:
        # A warning, not also a log line: the CLI shows each warning once, as one line.
        msg = f"skipped {len(skipped)} unreadable image file(s) under {where}; first: {skipped[0]}"
        warnings.warn(msg, stacklevel=3)


def decode_listing(
    listing: Listing, *, grayscale: bool | None, image_size: int | None, progress: bool, workers: int | None
) -> ImageData:
    """Decode every image of ``listing`` into an ImageData (its ``name`` is ``listing.where``)."""
    workers = workers or default_workers()
    where, sources, n_train = listing.where, list(listing.sources), listing.n_train
    labels = np.asarray(listing.labels, dtype=np.int64)
    skipped: list[str] = []
    if grayscale is None:  # gray only if every readable image is
        probes = probe_all(sources, workers=workers, progress=progress)
        keep = np.array([not isinstance(p, str) for p in probes], dtype=bool)
        skipped += [p for p in probes if isinstance(p, str)]
        grayscale = all(p for p in probes if not isinstance(p, str))
        n_train = int(keep[:n_train].sum())
        sources, labels = [s for s, k in zip(sources, keep, strict=True) if k], labels[keep]
    size = image_size or DEFAULT_SIZE[bool(grayscale)]
    if size < 1:
        raise DigitlabError(f"image size must be positive, got {size}")

    x_np, errors = decode_all(sources, bool(grayscale), size, workers=workers, progress=progress)
    ok = np.array([e is None for e in errors], dtype=bool)
    skipped += [e for e in errors if e is not None]
    if not ok.any():
        warn_skipped(skipped, where)
        raise DigitlabError(f"no readable images under {where} ({len(skipped)} files failed to decode)")

    x = torch.from_numpy(x_np)  # (N_ok, C, H, W)
    labels = labels[ok]
    y = torch.from_numpy(labels)
    n_train_ok = int(ok[:n_train].sum())
    if listing.split:
        train_sel, test_sel = np.arange(n_train_ok), np.arange(n_train_ok, len(labels))
    else:
        train_sel, test_sel = _split(labels, listing.classes)
    if len(train_sel) == 0 or len(test_sel) == 0:
        warn_skipped(skipped, where)
        raise DigitlabError(
            f"{where}: not enough readable images for a train and a test set "
            f"({len(train_sel)} train, {len(test_sel)} test); each class needs at least two images"
        )
    for c, name in enumerate(listing.classes):
        if not (labels[train_sel] == c).any():
            warnings.warn(f"class {name!r} has no readable training images in {where}", stacklevel=2)
    if listing.split:  # already in order: slices, not copies
        train_x, train_y = x[:n_train_ok], y[:n_train_ok]
        test_x, test_y = x[n_train_ok:], y[n_train_ok:]
    else:
        tr, te = torch.from_numpy(train_sel), torch.from_numpy(test_sel)
        train_x, train_y, test_x, test_y = x[tr], y[tr], x[te], y[te]
    mean, std = channel_stats(train_x)
    return ImageData(
        name=where,
        train_x=train_x.contiguous(),
        train_y=train_y.contiguous(),
        test_x=test_x.contiguous(),
        test_y=test_y.contiguous(),
        classes=list(listing.classes),
        mean=mean,
        std=std,
        skipped=skipped,
    )


def load_folder(
    root: str | os.PathLike,
    *,
    grayscale: bool | None = None,
    image_size: int | None = None,
    progress: bool = True,
    workers: int | None = None,
    cache: bool | None = None,
) -> ImageData:
    """Load an image folder into uint8 tensors, from the decode cache when nothing changed.

    Args:
        root: ``root/<class>/<images>``, or ``root/train/<class>`` + ``root/test/<class>``.
        grayscale: True/False forces gray/RGB; None: gray if every image is gray.
        image_size: side of the square images (None: 28 for gray, 32 for RGB).
        progress: show a progress bar while decoding large folders.
        workers: decoding processes (None: one per core).
        cache: read and write the decode cache (None: for folders of ``CACHE_MIN_IMAGES`` images or more).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DigitlabError(f"image folder {root} does not exist (or is not a folder)")
    listing, fingerprint = scan_folder(root)

    def build() -> ImageData:
        return decode_listing(listing, grayscale=grayscale, image_size=image_size, progress=progress, workers=workers)

    if cache is None:
        cache = len(listing.sources) >= CACHE_MIN_IMAGES
    if cache:
        settings = ["folder", DECODE_VERSION, grayscale, image_size]
        data = imagecache.cached(root, settings, imagecache.content_key([settings, fingerprint]), build)
    else:
        data = build()
    warn_skipped(data.skipped, str(root))
    data.name, data.source = str(root), str(root.resolve())
    return data
