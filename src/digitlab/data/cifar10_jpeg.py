"""CIFAR-10 from a JPEG copy: ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``, unpacked or as a .tar.gz.

Where the official pickles are absent, ``load_cifar10`` reads such a copy (``cifar10-jpeg.tar.gz``,
or the folder it unpacks to) as CIFAR-10: the ten classes in CIFAR-10's label order, CIFAR-10's
normalisation (so a model trained on the copy feeds the same numbers as one trained on the
pickles), CIFAR-10's augmentation, and a ``note`` ("JPEG q75 copy") that every report and
``digitlab data info`` carry, since JPEG artefacts cost a little accuracy against the lossless
originals. An image folder given by path with CIFAR-10's classes at 32x32 RGB gets the same
treatment (``as_cifar10``). The archive is read member by member with ``tarfile`` (nothing is
extracted, each member's size is capped) and decoded once into the decode cache.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from dataclasses import replace
from pathlib import Path, PurePosixPath

import torch
from PIL import Image

from digitlab.data import imagecache
from digitlab.data.base import ImageData
from digitlab.data.decode import DECODE_VERSION
from digitlab.data.folder import IMAGE_EXTENSIONS, Listing, decode_listing, scan_folder, warn_skipped
from digitlab.data.locate import search_roots
from digitlab.errors import DigitlabError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10's official statistics (the copy's differ by 1e-4)
STD = (0.2470, 0.2435, 0.2616)
SIZES = (50_000, 10_000)  # train, test: a copy with other counts is named with them
ARCHIVE = "cifar10-jpeg.tar.gz"
SUBDIRS = ["", "cifar10-jpeg", "cifar10", "cifar-10", "CIFAR10", "cifar10-jpeg/cifar10-jpeg"]
MAX_MEMBER_BYTES = 1 << 20  # a 32x32 JPEG is about 1 KB; a member this large is not one
COPY_VERSION = 2  # bump when as_cifar10 changes what an archive's cache holds (2: classes interleaved)
MAX_MEMBERS = 200_000  # more than three times CIFAR-10: an archive this long is not a copy of it


def is_cifar10_folder(folder: Path) -> bool:
    """Whether ``folder`` holds ``train/<class>`` and ``test/<class>`` for exactly CIFAR-10's ten classes."""
    try:
        return all(
            (folder / split).is_dir()
            and sorted(d.name for d in (folder / split).iterdir() if d.is_dir() and not d.name.startswith("."))
            == CLASSES
            for split in ("train", "test")
        )
    except OSError:
        return False


def find_cifar10_jpeg(data_dir: str | os.PathLike | None = None) -> Path | None:
    """An unpacked JPEG copy (folder) or ``cifar10-jpeg.tar.gz`` in the usual places (folder first)."""
    for root in search_roots(data_dir):
        for sub in SUBDIRS:
            d = root / sub if sub else root
            if is_cifar10_folder(d):
                return d
            if (d / ARCHIVE).is_file():
                return d / ARCHIVE
    return None


# The IJG (libjpeg) base luminance table; quality q scales it (how `cjpeg -quality q` and Pillow write).
_IJG_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
             14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
             49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]  # fmt: skip


def jpeg_quality(im: Image.Image) -> int | None:
    """The IJG quality a JPEG was saved at, read from its luminance quantisation table (None if not IJG's)."""
    table = list(getattr(im, "quantization", {}).get(0, []))
    for q in range(1, 101):
        scale = 5000 // q if q < 50 else 200 - 2 * q
        if table == [min(255, max(1, (v * scale + 50) // 100)) for v in _IJG_LUMA]:
            return q
    return None


def _note(first_jpeg: bytes | Path | None, counts: tuple[int, int]) -> str:
    """``JPEG q75 copy`` (the quality read from a file), plus the counts when they are not CIFAR-10's."""
    kind = "image-folder copy"
    if isinstance(first_jpeg, Path) and first_jpeg.is_dir():
        first_jpeg = _first_file(first_jpeg)
    if first_jpeg is not None:
        import io

        try:
            with Image.open(io.BytesIO(first_jpeg) if isinstance(first_jpeg, bytes) else first_jpeg) as im:
                if im.format == "JPEG":
                    q = jpeg_quality(im)
                    kind = f"JPEG q{q} copy" if q else "JPEG copy"
        except Exception:  # noqa: BLE001 - the note is a description; an unreadable first file keeps the plain one
            pass
    if counts != SIZES:
        kind += f", {counts[0]:,} train / {counts[1]:,} test images"
    return kind


def as_cifar10(data: ImageData, first_image: bytes | Path | None) -> ImageData:
    """CIFAR-10's name, normalisation and note for a copy of it (``data`` has CIFAR-10's classes, 3x32x32).

    ``first_image`` (an image's bytes or path, or the copy's folder) tells the note the JPEG quality.
    """
    note = _note(first_image, (len(data.train_y), len(data.test_y)))
    tr, te = _interleave(data.train_y), _interleave(data.test_y)
    return replace(
        data,
        name="cifar10",
        train_x=data.train_x[tr],
        train_y=data.train_y[tr],
        test_x=data.test_x[te],
        test_y=data.test_y[te],
        mean=MEAN,
        std=STD,
        note=note,
    )


def _interleave(labels: torch.Tensor) -> torch.Tensor:
    """The order that takes the classes in turn (first image of each class, then the second...).

    A copy stored class by class would otherwise make ``--limit-train 5000`` all airplanes and
    ``data show`` a row of one class; the official batches are mixed too.
    """
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(len(labels)) - starts  # the image's place within its class
    return torch.argsort(rank * (int(labels.max()) + 1 if len(labels) else 1) + labels, stable=True)


def looks_like_cifar10(data: ImageData) -> bool:
    """An image folder that is CIFAR-10: its ten classes, RGB 32x32."""
    return data.classes == CLASSES and data.channels == 3 and data.image_size == 32


def _first_file(folder: Path) -> Path | None:
    """The first image of the first class (the note reads its JPEG quality)."""
    d = folder / "train" / CLASSES[0] if (folder / "train").is_dir() else folder / CLASSES[0]
    try:
        names = [n for n in os.listdir(d) if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
    except OSError:
        return None
    return d / min(names) if names else None


def _archive_listing(path: Path) -> Listing:
    """Every ``.../(train|test)/<class>/<image>`` member of the archive, read into memory (none extracted)."""
    found: dict[str, list[tuple[str, int, bytes]]] = {"train": [], "test": []}
    try:
        with tarfile.open(path, "r:*") as tar:
            for i, member in enumerate(tar):
                if i >= MAX_MEMBERS:
                    raise DigitlabError(f"{path}: more than {MAX_MEMBERS:,} members; not a CIFAR-10 copy")
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
                    continue
                split, cls = parts[-3], parts[-2]
                if split not in found or cls not in CLASSES or parts[-1].startswith("."):
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise DigitlabError(f"{path}:{member.name}: {member.size:,} bytes, over the 1 MB a member may have")
                f = tar.extractfile(member)
                data = f.read(MAX_MEMBER_BYTES + 1) if f is not None else b""
                found[split].append((member.name, CLASSES.index(cls), data))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DigitlabError(f"{path} is corrupt or truncated ({exc})") from exc
    if not found["train"] or not found["test"]:
        raise DigitlabError(f"{path}: no train/<class>/ and test/<class>/ images of CIFAR-10's classes inside")
    items = [sorted(found[s], key=lambda m: (m[1], m[0])) for s in ("train", "test")]  # by class, then name
    sources: list = [(name, data) for part in items for name, _, data in part]
    labels = [label for part in items for _, label, _ in part]
    return Listing(list(CLASSES), sources, labels, len(items[0]), True, str(path))


def load_cifar10_jpeg(path: str | os.PathLike, *, progress: bool = True, workers: int | None = None) -> ImageData:
    """CIFAR-10 from a JPEG copy: the unpacked folder or the ``.tar.gz``, decoded once and then cached.

    Args:
        path: a folder with ``train/<class>`` and ``test/<class>``, or a tar archive holding them.
        progress: show a progress bar while decoding.
        workers: decoding processes (None: one per core).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        listing, fingerprint = scan_folder(path)  # every file's path, size and mtime
        settings = ["cifar10-folder", DECODE_VERSION, COPY_VERSION]
        key = imagecache.content_key([settings, fingerprint])

        def build_folder() -> ImageData:
            data = decode_listing(listing, grayscale=False, image_size=32, progress=progress, workers=workers)
            return as_cifar10(data, path)

        data = imagecache.cached(path, settings, key, build_folder)  # as_cifar10's order and note cached too
        warn_skipped(data.skipped, str(path))
    elif path.is_file():
        st = path.stat()
        settings = ["cifar10-archive", DECODE_VERSION, COPY_VERSION]
        key = imagecache.content_key([settings, str(path.resolve()), st.st_size, st.st_mtime_ns])

        def build_archive() -> ImageData:
            listing = _archive_listing(path)
            data = decode_listing(listing, grayscale=False, image_size=32, progress=progress, workers=workers)
            first = listing.sources[0]  # (name, bytes): the archive's first image
            return as_cifar10(data, first[1] if isinstance(first, tuple) else None)

        data = imagecache.cached(path, settings, key, build_archive)
    else:
        raise DigitlabError(f"{path}: no such file or folder")
    data.source = str(path.resolve())
    return data
