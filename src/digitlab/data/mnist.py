"""MNIST and Fashion-MNIST from IDX files (gzip-compressed or not).

IDX: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the data. The header is read and checked first, the data is then read
(inflated, for ``.gz``) straight into one array of the declared size: the 47 MB of MNIST
training images load in a fraction of a second, and a crafted file cannot make us hold
more than the size cap allows.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from digitlab.data.base import MAX_DEFLATE_RATIO, ImageData
from digitlab.data.locate import find_idx_files, missing_message
from digitlab.errors import DigitlabError

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
STATS = {  # published per-channel mean/std of the training images, [0, 1] scale
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
}


# The largest IDX file digitlab reads is MNIST's training images, 47 MB uncompressed
# (60,000 x 28 x 28). The header's declared size is checked against this before a byte is
# inflated, so a small crafted .gz cannot expand into gigabytes; 4x leaves room for
# larger IDX sets of the same kind while bounding memory well under 500 MB.
MAX_IDX_BYTES = 4 * 47_040_016
# Datasets store labels as 1 dimension and images as 3 (N, H, W); 4 allows a channel axis.
MAX_IDX_DIMS = 4
_READ_CHUNK = 1 << 20


def _stream(raw: io.BufferedIOBase, path: Path) -> tuple[io.BufferedIOBase, bool]:
    """``raw`` as a stream of IDX bytes: inflated on the fly if it is gzip, as it is otherwise."""
    magic = raw.read(2)
    raw.seek(0)
    if magic == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb"), True
    if path.name.endswith(".gz") and magic != b"\x00\x00":
        raise DigitlabError(f"{path} is not a gzip file (and not an uncompressed IDX file either)")
    return raw, False


def _read_exactly(f: io.BufferedIOBase, n: int) -> bytes:
    out = f.read(n)
    return out if out is not None else b""


def _header(f: io.BufferedIOBase, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    head = _read_exactly(f, 4)
    if len(head) < 4:
        raise DigitlabError(f"{path} is not an IDX file: only {len(head)} bytes")
    if head[:2] != b"\x00\x00":
        raise DigitlabError(f"{path} is not an IDX file: bad magic number 0x{head.hex()}")
    type_code, ndim = head[2], head[3]
    if type_code not in IDX_TYPES:
        raise DigitlabError(f"{path}: unknown IDX data type 0x{type_code:02x}")
    if not 1 <= ndim <= MAX_IDX_DIMS:
        raise DigitlabError(f"{path}: IDX header declares {ndim} dimensions (a dataset file has 1 to {MAX_IDX_DIMS})")
    raw_dims = _read_exactly(f, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DigitlabError(
            f"{path} is truncated: the header needs {4 + 4 * ndim} bytes, the file has {4 + len(raw_dims)}"
        )
    dims: tuple[int, ...] = struct.unpack(f">{ndim}I", raw_dims)
    return IDX_TYPES[type_code], dims


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or uncompressed) into a writable native-endian array.

    The header is read first and the declared size checked (at most ``MAX_IDX_BYTES``) before
    the data is read or inflated. Raises DigitlabError naming the file for a bad magic number,
    an unknown type, too many or empty dimensions, a size over the cap, or a data size that
    does not match the header (truncated or trailing bytes).
    """
    path = Path(path)
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise DigitlabError(f"cannot read {path}: {exc.strerror or exc}") from exc
    compressed = False
    try:
        with raw:
            f, compressed = _stream(raw, path)
            size = os.fstat(raw.fileno()).st_size
            with f:
                return _read_idx(f, path, size * MAX_DEFLATE_RATIO if compressed else size)
    except EOFError as exc:
        raise DigitlabError(f"{path} is truncated: the gzip stream ends early (re-download it)") from exc
    except (OSError, zlib.error) as exc:
        what = "a corrupt gzip file" if compressed else "unreadable"
        raise DigitlabError(f"{path} is {what} ({getattr(exc, 'strerror', None) or exc}); re-download it") from exc


def _read_idx(f: io.BufferedIOBase, path: Path, at_most: int) -> np.ndarray:
    """The array after the header; ``at_most`` bounds what the file can hold (file size, or its inflated bound)."""
    dtype, dims = _header(f, path)
    shape = "x".join(map(str, dims))
    if 0 in dims:
        raise DigitlabError(f"{path}: IDX header declares an empty array ({shape})")
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow for any header
    if expected > MAX_IDX_BYTES:
        raise DigitlabError(
            f"{path}: IDX header declares {shape} values ({expected:,} bytes), over the {MAX_IDX_BYTES:,}-byte "
            "limit for a dataset file"
        )
    if 4 + 4 * len(dims) + expected > at_most:  # checked before allocating: a 20-byte file cannot ask for 100 MB
        raise DigitlabError(
            f"{path} is truncated: header says {shape} values ({expected} bytes), more than the file can hold"
        )
    arr = np.empty(math.prod(dims), dtype=dtype)
    view = arr.data.cast("B")
    got = 0
    while got < expected:
        n = f.readinto(view[got : got + _READ_CHUNK])
        if not n:
            break
        got += n
    if got < expected:
        raise DigitlabError(
            f"{path} is truncated: header says {shape} values ({expected} bytes), the file holds {got} bytes"
        )
    extra = len(_read_exactly(f, _READ_CHUNK))
    if extra:
        amount = f"{extra} bytes" if extra < _READ_CHUNK else f"more than {_READ_CHUNK:,} bytes"
        raise DigitlabError(f"{path} is corrupt: {amount} after the data the header declares")
    arr = arr.reshape(dims)
    if not dtype.isnative:
        arr = arr.byteswap(inplace=True).view(dtype.newbyteorder("="))  # native byte order, no copy
    return arr


def _pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DigitlabError(f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise DigitlabError(f"{labels_path}: expected labels (N,), got shape {labels.shape}")
    if len(images) != len(labels):
        raise DigitlabError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.dtype.kind == "f":  # IDX allows float labels; only whole numbers are classes
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            i = int(np.argmax(bad))
            raise DigitlabError(f"{labels_path}: labels must be whole numbers, label {i} is {labels[i]}")
    if labels.min() < 0 or labels.max() >= num_classes:  # finite here, so min/max are exact
        found = f"{labels.min():g}..{labels.max():g}"
        raise DigitlabError(f"{labels_path}: labels must be in 0..{num_classes - 1}, found {found}")
    x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 28, 28) uint8
    y = torch.from_numpy(labels.astype(np.int64))  # (N,)
    return x, y


def load_mnist(
    name: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    mirrors: list[str] | None = None,
) -> ImageData:
    """MNIST or Fashion-MNIST (``name``) as uint8 tensors; downloads missing files if allowed."""
    if name not in STATS:
        raise ValueError(f"load_mnist serves mnist and fashion-mnist, not {name!r}")
    files = find_idx_files(name, data_dir)
    if files is None:
        files = _download(name, data_dir, download, progress, mirrors)
    classes = MNIST_CLASSES if name == "mnist" else FASHION_CLASSES
    train_x, train_y = _pair(files["train_images"], files["train_labels"], len(classes))
    test_x, test_y = _pair(files["test_images"], files["test_labels"], len(classes))
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DigitlabError(f"train images are {tuple(train_x.shape[2:])} but test images {tuple(test_x.shape[2:])}")
    mean, std = STATS[name]
    return ImageData(
        name=name,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        classes=list(classes),
        mean=mean,
        std=std,
        source=str(files["train_images"].parent),
    )


def _download(name, data_dir, download, progress, mirrors) -> dict[str, Path]:
    from digitlab.data.download import download_dataset
    from digitlab.data.locate import download_dir

    if not download:
        raise DigitlabError(missing_message(name, data_dir) + "\n  (downloading is switched off)")
    dest = download_dir(name, data_dir)
    try:
        download_dataset(name, dest, mirrors=mirrors, progress=progress)
    except DigitlabError as exc:
        raise DigitlabError(f"{exc}\n{missing_message(name, data_dir)}") from exc
    files = find_idx_files(name, dest)
    if files is None:  # cannot happen unless the folder changed under us
        raise DigitlabError(missing_message(name, dest))
    return files
