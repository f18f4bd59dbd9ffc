"""CIFAR-10 from the official python pickles, read with an unpickler that cannot run code.

The batches are Python 2 pickles of dicts holding a numpy array; a plain ``pickle.load``
would execute whatever a tampered file asks for. ``SafeUnpickler`` resolves only the
names needed to rebuild numpy arrays, so anything else (``os.system``, ``eval``...) is
refused with a DigitlabError, and it bounds what a small file can make it allocate: files
and archive entries are size-capped before they are read, the memo is capped, numpy is
only rebuilt the way numpy pickles itself, and labels are checked before any conversion.
Accepts the ``cifar-10-python.tar.gz`` archive or the extracted ``cifar-10-batches-py/`` folder.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import torch

from digitlab.data.base import MAX_DEFLATE_RATIO, ImageData
from digitlab.data.locate import CIFAR_BATCHES, find_cifar10, missing_message
from digitlab.errors import DigitlabError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

# The largest file of the python set is a 10,000-image batch, 31 MB (10,000 x 3,073 bytes and
# the file names). A file or tarball member above this is refused before it is read, so a few MB
# of gzip cannot make us hold a gigabyte; unpickling then holds at most a few times the file.
MAX_MEMBER_BYTES = 40 << 20
# The archive holds 9 entries (the folder, 7 pickles, readme.html); tarfile keeps a record per
# entry, so an archive of millions of tiny entries must stop early.
MAX_TAR_MEMBERS = 64
# A batch memoizes one entry per file name (10,000); a memo of millions of entries is a bomb.
MAX_MEMO = 100_000
# Hashing a key walks it whole: a tuple nested through shared references hashes for ever.
_KEY_TYPES = (str, bytes, int, float, bool, type(None))

# Take the functions from numpy objects instead of importing numpy.core by name (deprecated in numpy 2).
_RECONSTRUCT = np.ndarray(0).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1, np.uint8).__reduce_ex__(5)[0]  # protocol-5 pickles of arrays


# What a pickle gets for ``numpy.ndarray``: only ``_reconstruct`` accepts it. Calling the class
# itself would allocate any shape uninitialised (np.ndarray((100000, 3072)) is 2.4 GB).
class _NdarrayClass:
    def __call__(self, *args: object, **kwargs: object) -> None:
        raise pickle.UnpicklingError("refusing to call numpy.ndarray (it allocates any shape uninitialised)")


_NDARRAY = _NdarrayClass()


def _reconstruct(cls: object, shape: object, dtype_code: object) -> np.ndarray:
    """numpy's pickled arrays start as an empty (0,) array that BUILD then fills from real bytes."""
    if cls is not _NDARRAY or shape != (0,):
        raise pickle.UnpicklingError("numpy _reconstruct called other than numpy pickles call it")
    return _RECONSTRUCT(np.ndarray, (0,), dtype_code)


def _scalar(dtype: object, data: object = None) -> object:
    """A numpy number from its bytes (never an object scalar or a size the bytes do not have)."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalar of an unsupported kind")
    if len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar with the wrong number of bytes")
    return _SCALAR(dtype, data)


def _encode(text: object, encoding: object = "utf-8") -> bytes:
    """How Python 3's protocol 2 stores bytes: ``_codecs.encode(latin1_text, 'latin1')``; no other codec."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"refusing codec {str(encoding)[:40]!r}")
    return text.encode("latin1")


def _check_keys(items: Iterable[object]) -> None:
    for k in items:
        if type(k) not in _KEY_TYPES:
            raise pickle.UnpicklingError(f"refusing a {type(k).__name__} as a dict key or set item")


def _set(items: Iterable[object] = ()) -> set:
    listed = list(items)
    _check_keys(listed)
    return set(listed)


def _frozenset(items: Iterable[object] = ()) -> frozenset:
    return frozenset(_set(items))


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    # Plain containers pickled by reference under protocol 2 (Python 2 calls the module
    # __builtin__; overriding find_class skips pickle's own renaming). No bytearray: bytearray(n)
    # allocates n bytes from a 34-byte pickle.
    **{(mod, "set"): _set for mod in ("builtins", "__builtin__")},
    **{(mod, "frozenset"): _frozenset for mod in ("builtins", "__builtin__")},
    ("_codecs", "encode"): _encode,
}


def _memo_capped(load):
    def capped(self):
        if len(self.memo) >= MAX_MEMO:
            raise pickle.UnpicklingError(f"more than {MAX_MEMO:,} memoized objects")
        load(self)

    return capped


# The pure-Python unpickler (typeshed does not describe its internals: stack, load_* methods).
_PyUnpickler: Any = pickle._Unpickler


class SafeUnpickler(_PyUnpickler):
    """An unpickler that only rebuilds numpy arrays and plain Python containers, within bounds.

    The pure-Python unpickler, so single opcodes can be checked: the memo is capped, dict keys
    and set items are scalars, and BUILD only fills numpy arrays and dtypes.
    """

    dispatch = dict(_PyUnpickler.dispatch)

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None

    def load_build(self):
        if not isinstance(self.stack[-2], (np.ndarray, np.dtype)):
            raise pickle.UnpicklingError(f"refusing to set the state of a {type(self.stack[-2]).__name__}")
        super().load_build()

    def load_setitem(self):
        _check_keys(self.stack[-2:-1])  # dict, key, value
        super().load_setitem()

    def load_setitems(self):
        _check_keys(self.stack[::2])  # after the mark: key, value, key, value...
        super().load_setitems()

    def load_dict(self):
        _check_keys(self.stack[::2])
        super().load_dict()

    def load_additems(self):
        _check_keys(self.stack)
        super().load_additems()

    def load_frozenset(self):
        _check_keys(self.stack)
        super().load_frozenset()


_MEMO_OPS = (pickle.PUT, pickle.BINPUT, pickle.LONG_BINPUT, pickle.MEMOIZE)
for _op, _load in [
    (pickle.BUILD, SafeUnpickler.load_build),
    (pickle.SETITEM, SafeUnpickler.load_setitem),
    (pickle.SETITEMS, SafeUnpickler.load_setitems),
    (pickle.DICT, SafeUnpickler.load_dict),
    (pickle.ADDITEMS, SafeUnpickler.load_additems),
    (pickle.FROZENSET, SafeUnpickler.load_frozenset),
    *[(op, _memo_capped(_PyUnpickler.dispatch[op[0]])) for op in _MEMO_OPS],
]:
    SafeUnpickler.dispatch[_op[0]] = _load


def safe_unpickle(data: bytes, source: str) -> object:
    """Unpickle CIFAR data (Python 2 pickles: ``encoding='bytes'``); DigitlabError on anything unsafe or corrupt."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DigitlabError(f"{source}: not a valid CIFAR-10 pickle ({exc})") from exc
    except Exception as exc:  # any other failure on untrusted bytes is a corrupt file, never a traceback
        raise DigitlabError(f"{source}: corrupt or truncated pickle ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _str_keys(d: object, source: str) -> dict:
    if not isinstance(d, dict):
        raise DigitlabError(f"{source}: expected a dict, found {type(d).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _labels(y: object, n: int, source: str) -> np.ndarray:
    """A flat list (or 1-D array) of ``n`` integers in 0..9; anything else is named, never converted.

    Why not ``np.asarray`` first: a list nested through shared references (a few hundred bytes
    of pickle) flattens into gigabytes, and a list that contains itself never ends.
    """
    if isinstance(y, np.ndarray):
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise DigitlabError(f"{source}: expected {n} integer labels, found {y.dtype} {y.shape}")
        out = y.astype(np.int64)
    elif isinstance(y, list):
        bad = next((i for i, v in enumerate(y) if type(v) is not int), None)
        if bad is not None:
            raise DigitlabError(f"{source}: labels must be integers, label {bad} is a {type(y[bad]).__name__}")
        try:
            out = np.array(y, dtype=np.int64)
        except OverflowError:
            raise DigitlabError(f"{source}: labels must be in 0..9, found one beyond 64 bits") from None
    else:
        raise DigitlabError(f"{source}: expected a list of labels, found {type(y).__name__}")
    if len(out) != n:
        raise DigitlabError(f"{source}: {n} images but {len(out)} labels")
    if out.min() < 0 or out.max() >= len(CLASSES):
        raise DigitlabError(f"{source}: labels must be in 0..9, found {out.min()}..{out.max()}")
    return out


def _batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    d = _str_keys(safe_unpickle(data, source), source)
    if "data" not in d or "labels" not in d:
        keys = sorted(k[:40] for k in d if isinstance(k, str))  # never the repr of an unknown object
        raise DigitlabError(f"{source}: missing 'data' or 'labels' (keys: {keys})")
    x = d["data"]
    if not isinstance(x, np.ndarray):
        raise DigitlabError(f"{source}: expected the images as a numpy array, found {type(x).__name__}")
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) == 0:
        raise DigitlabError(f"{source}: expected uint8 data (N, 3072) with N > 0, found {x.dtype} {x.shape}")
    y = _labels(d["labels"], len(x), source)
    return x.reshape(-1, 3, 32, 32), y


def _class_names(data: bytes | None, source: str) -> list[str]:
    """The meta file's 10 names, or the standard ones when it is absent or holds anything else."""
    if data is None:
        return list(CLASSES)
    d = _str_keys(safe_unpickle(data, source), source)
    names = d.get("label_names")
    if not isinstance(names, list) or len(names) != len(CLASSES):
        return list(CLASSES)
    if not all(isinstance(n, (str, bytes)) and 0 < len(n) <= 64 for n in names):
        return list(CLASSES)
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _read_file(p: Path) -> bytes | None:
    try:
        if not p.is_file():
            return None
        size = p.stat().st_size
        if size > MAX_MEMBER_BYTES:
            raise DigitlabError(f"{p} is {size:,} bytes; a CIFAR-10 batch is at most {MAX_MEMBER_BYTES:,}")
        return p.read_bytes()
    except OSError as exc:
        raise DigitlabError(f"cannot read {p}: {exc.strerror or exc}") from exc


class _BoundedReads:
    """The inflated archive for tarfile, refusing any single read over the member cap.

    Why: tarfile reads a GNU long-name or pax header whole, before we see the entry; a header
    that declares gigabytes must fail here instead of being allocated.
    """

    def __init__(self, f: gzip.GzipFile, path: Path) -> None:
        self._f, self._path = f, path

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > MAX_MEMBER_BYTES:
            raise DigitlabError(f"{self._path}: an entry needs a read of {n:,} bytes; not the CIFAR-10 archive")
        return self._f.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


def _read_tarball(path: Path, wanted: list[str]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = dict.fromkeys(wanted)
    try:
        holds = path.stat().st_size * MAX_DEFLATE_RATIO  # the most the archive can inflate to
        with (
            gzip.GzipFile(path, "rb") as gz,
            tarfile.open(fileobj=cast(IO[bytes], _BoundedReads(gz, path)), mode="r:") as tar,
        ):
            for count, member in enumerate(tar, start=1):
                if count > MAX_TAR_MEMBERS:
                    raise DigitlabError(f"{path} holds more than {MAX_TAR_MEMBERS} entries: not the CIFAR-10 archive")
                # Checked from the entry's header before the entry is read, or skipped (skipping inflates it too).
                if member.size > MAX_MEMBER_BYTES:
                    raise DigitlabError(
                        f"{path}: {member.name} declares {member.size:,} bytes; "
                        f"a CIFAR-10 batch is at most {MAX_MEMBER_BYTES:,}"
                    )
                base = member.name.rsplit("/", 1)[-1]
                if not (member.isfile() and base in out):
                    continue
                if member.size > holds:  # its bytes cannot be in the file: no buffer is made for them
                    raise DigitlabError(f"{path} is truncated: {member.name} declares {member.size:,} bytes")
                # Exactly its size: reading more would make a buffer of that size first.
                out[base] = tar.extractfile(member).read(member.size)  # type: ignore[union-attr]
                if all(out[n] is not None for n in wanted):
                    break  # nothing else in the archive is read
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DigitlabError(f"{path} is corrupt or truncated ({exc}); delete it and download again") from exc
    return out


def _read_members(path: Path) -> dict[str, bytes | None]:
    """The raw bytes of every batch (and batches.meta, if present) from a folder or the tarball."""
    wanted = [*CIFAR_BATCHES, "batches.meta"]
    if path.is_dir():
        out = {name: _read_file(path / name) for name in wanted}
    else:
        out = _read_tarball(path, wanted)
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
    """CIFAR-10 as uint8 (N, 3, 32, 32) tensors: 50,000 train and 10,000 test images.

    Without the official pickles, a JPEG copy (``data.cifar10_jpeg``) is read instead of downloading.
    """
    path = find_cifar10(data_dir)
    if path is None:
        from digitlab.data.cifar10_jpeg import find_cifar10_jpeg, load_cifar10_jpeg

        jpeg = find_cifar10_jpeg(data_dir)
        if jpeg is not None:
            return load_cifar10_jpeg(jpeg, progress=progress)
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
