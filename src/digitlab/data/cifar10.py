"""CIFAR-10 from the official python pickles, read with an unpickler that cannot run code.

The batches are Python 2 pickles of dicts holding a numpy array; a plain ``pickle.load``
would execute whatever a tampered file asks for. ``SafeUnpickler`` resolves only the
names needed to rebuild numpy arrays, so anything else (``os.system``, ``eval``...) is
refused with a DigitlabError. Accepts the ``cifar-10-python.tar.gz`` archive or the
extracted ``cifar-10-batches-py/`` folder.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from digitlab.data.base import ImageData
from digitlab.data.locate import CIFAR_BATCHES, find_cifar10, missing_message
from digitlab.errors import DigitlabError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

# Take the functions from numpy objects instead of importing numpy.core by name (deprecated in numpy 2).
_RECONSTRUCT = np.ndarray(0).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1, np.uint8).__reduce_ex__(5)[0]  # protocol-5 pickles of arrays
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Plain containers pickled by reference under protocol 2 (Python 2 calls the module
    # __builtin__; overriding find_class skips pickle's own renaming); none can run code.
    **{(mod, c.__name__): c for mod in ("builtins", "__builtin__") for c in (set, frozenset, bytearray)},
    ("_codecs", "encode"): __import__("codecs").encode,  # how Python 3 protocol 2 stores bytes
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays and plain Python containers."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def safe_unpickle(data: bytes, source: str) -> object:
    """Unpickle CIFAR data (Python 2 pickles: ``encoding='bytes'``); DigitlabError on anything unsafe or corrupt."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DigitlabError(f"{source}: not a valid CIFAR-10 pickle ({exc})") from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError, OverflowError) as exc:
        raise DigitlabError(f"{source}: corrupt or truncated pickle ({type(exc).__name__}: {exc})") from exc


def _str_keys(d: object, source: str) -> dict:
    if not isinstance(d, dict):
        raise DigitlabError(f"{source}: expected a dict, found {type(d).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    d = _str_keys(safe_unpickle(data, source), source)
    if "data" not in d or "labels" not in d:
        raise DigitlabError(f"{source}: missing 'data' or 'labels' (keys: {sorted(map(str, d))})")
    x, y = np.asarray(d["data"]), np.asarray(d["labels"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise DigitlabError(f"{source}: expected uint8 data (N, 3072), found {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DigitlabError(f"{source}: expected {len(x)} integer labels, found {y.dtype} {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= len(CLASSES)):
        raise DigitlabError(f"{source}: labels must be in 0..9, found {y.min()}..{y.max()}")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _class_names(data: bytes | None, source: str) -> list[str]:
    if data is None:
        return list(CLASSES)
    d = _str_keys(safe_unpickle(data, source), source)
    names = d.get("label_names")
    if not isinstance(names, list) or len(names) != len(CLASSES):
        return list(CLASSES)
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def _read_members(path: Path) -> dict[str, bytes | None]:
    """The raw bytes of every batch (and batches.meta, if present) from a folder or the tarball."""
    wanted = [*CIFAR_BATCHES, "batches.meta"]
    if path.is_dir():
        out = {}
        for name in wanted:
            p = path / name
            try:
                out[name] = p.read_bytes() if p.is_file() else None
            except OSError as exc:
                raise DigitlabError(f"cannot read {p}: {exc.strerror or exc}") from exc
    else:
        out = dict.fromkeys(wanted)
        try:
            with tarfile.open(path, "r:gz") as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and base in out:
                        out[base] = tar.extractfile(member).read()  # type: ignore[union-attr]
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DigitlabError(f"{path} is corrupt or truncated ({exc}); delete it and download again") from exc
    missing = [n for n in CIFAR_BATCHES if out[n] is None]
    if missing:
        raise DigitlabError(f"{path}: missing CIFAR-10 batch file(s) {', '.join(missing)}")
    return out


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    mirrors: list[str] | None = None,
) -> ImageData:
    """CIFAR-10 as uint8 (N, 3, 32, 32) tensors: 50,000 train and 10,000 test images."""
    path = find_cifar10(data_dir)
    if path is None:
        path = _download(data_dir, download, progress, mirrors)
    members = _read_members(path)
    parts = [_batch(members[n], f"{path}:{n}") for n in CIFAR_BATCHES[:-1]]  # type: ignore[arg-type]
    test_x, test_y = _batch(members["test_batch"], f"{path}:test_batch")  # type: ignore[arg-type]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    return ImageData(
        name="cifar10",
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_y=torch.from_numpy(test_y),
        classes=_class_names(members["batches.meta"], f"{path}:batches.meta"),
        mean=MEAN,
        std=STD,
        source=str(path),
    )


def _download(data_dir, download, progress, mirrors) -> Path:
    from digitlab.data.download import download_dataset
    from digitlab.data.locate import download_dir

    if not download:
        raise DigitlabError(missing_message("cifar10", data_dir) + "\n  (downloading is switched off)")
    dest = download_dir("cifar10", data_dir)
    try:
        (path,) = download_dataset("cifar10", dest, mirrors=mirrors, progress=progress)
    except DigitlabError as exc:
        raise DigitlabError(f"{exc}\n{missing_message('cifar10', data_dir)}") from exc
    return path
