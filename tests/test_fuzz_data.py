"""Fuzzing the data readers: any input gives a valid result or a DigitlabError, within a memory bound.

Targets: the IDX reader (data/mnist.py) and its label checks, the CIFAR-10 unpickler and
tarball reader (data/cifar10.py), image folders (data/folder.py) and the download checksum path
(data/download.py). Inputs are mutations of valid files and, for pickles, random opcode
streams. Each campaign is seeded (``derandomize``) and bounded in examples and time
(a hypothesis deadline per input: a reader that hangs fails). Short campaigns run by default,
long ones are marked slow. ``DIGITLAB_FUZZ_REPORT=FILE`` appends each target's counts
(inputs, clean errors, accepted, peak memory) to FILE as JSON lines.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import re
import struct
import tarfile
import tempfile
import tracemalloc
import warnings
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import idx_bytes, py2_pickle
from digitlab.data.base import MAX_DEFLATE_RATIO
from digitlab.data.cifar10 import MAX_MEMBER_BYTES, _batch, _read_members, safe_unpickle
from digitlab.data.download import checksum_ok
from digitlab.data.locate import CIFAR_BATCHES
from digitlab.data.mnist import IDX_TYPES, MAX_IDX_BYTES, _pair, read_idx
from digitlab.errors import DigitlabError

SHORT = settings(
    max_examples=40,
    derandomize=True,  # seeded: the same inputs on every run
    deadline=timedelta(seconds=10),  # far above any input's time; a hang or a quadratic blow-up fails
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LONG = settings(SHORT, max_examples=1500)
MB = 1 << 20


# --- measuring ------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


RSS = os.path.exists("/proc/self/clear_refs") and os.access("/proc/self/clear_refs", os.W_OK)


@dataclass
class Tally:
    inputs: int = 0
    clean_errors: int = 0
    accepted: int = 0
    other_exceptions: int = 0  # any is also a test failure
    peak_traced_mb: float = 0.0  # Python and numpy allocations (tracemalloc)
    peak_rss_growth_mb: float = 0.0  # resident memory above the start of the input (Linux: VmHWM)


TALLIES: dict[str, Tally] = {}


def bounded(target: str, fn, limit_bytes: int):
    """Run ``fn`` on one input: its result, or None after a DigitlabError; fails past ``limit_bytes``."""
    tally = TALLIES.setdefault(target, Tally())
    tally.inputs += 1
    if RSS:
        Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark
        rss0 = _status_kb("VmRSS")
    tracemalloc.start()
    try:
        result = fn()
        tally.accepted += 1
    except DigitlabError as exc:
        assert "\n" not in str(exc).split(":", 1)[0]  # one line before any detail
        tally.clean_errors += 1
        result = None
    except BaseException:
        tally.other_exceptions += 1
        raise
    finally:
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    tally.peak_traced_mb = max(tally.peak_traced_mb, traced / MB)
    assert traced < limit_bytes, f"{target}: {traced / MB:.1f} MB traced, bound {limit_bytes / MB:.1f} MB"
    if RSS:
        grown = (_status_kb("VmHWM") - rss0) * 1024
        tally.peak_rss_growth_mb = max(tally.peak_rss_growth_mb, grown / MB)
        assert grown < limit_bytes + 64 * MB, f"{target}: resident memory grew {grown / MB:.1f} MB"
    return result


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    out = os.environ.get("DIGITLAB_FUZZ_REPORT")
    if out:
        with open(out, "a") as f:
            for target, tally in sorted(TALLIES.items()):
                f.write(json.dumps({"target": target, **asdict(tally)}) + "\n")


# --- mutations --------------------------------------------------------------------------------


@st.composite
def mutated(draw, base: bytes, max_edits: int = 4) -> bytes:
    """``base`` with a few byte flips, overwrites, insertions, deletions or a truncation."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, max_edits))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos : pos + 4] = draw(st.binary(min_size=1, max_size=4))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


# --- the IDX reader -------------------------------------------------------------------------

IDX_DTYPES = list(IDX_TYPES.values())


@st.composite
def idx_files(draw) -> tuple[bytes, bool]:
    """(file bytes, gzip?): a valid small IDX file, its header sometimes rewritten, then mutated."""
    dtype = draw(st.sampled_from([np.dtype(np.uint8), np.dtype(np.int8), np.dtype(">i4"), np.dtype(">f4")]))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    arr = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape).astype(dtype)
    raw = bytearray(idx_bytes(arr))
    if draw(st.booleans()):  # a hostile header: any type code, dimension count and sizes
        raw[2] = draw(st.integers(0, 255))
        raw[3] = draw(st.integers(0, 255))
        dims = draw(st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=6))
        raw[4 : 4 + 4 * len(dims)] = struct.pack(f">{len(dims)}I", *dims)
    compressed = draw(st.booleans())
    data = gzip.compress(bytes(raw), mtime=0) if compressed else bytes(raw)
    return draw(mutated(data)), compressed


def _idx_property(blob: tuple[bytes, bool]) -> None:
    data, compressed = blob
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("x-idx.gz" if compressed else "x-idx")
        path.write_bytes(data)
        # What the reader may allocate: the file, or the most it can inflate to, never past the cap.
        limit = min(MAX_IDX_BYTES, len(data) * (MAX_DEFLATE_RATIO if compressed else 1)) + 2 * MB
        arr = bounded("idx", lambda: read_idx(path), limit)
    if arr is not None:
        assert isinstance(arr, np.ndarray) and 1 <= arr.ndim <= 4 and arr.size > 0
        assert arr.dtype.isnative and arr.flags.writeable and arr.nbytes <= MAX_IDX_BYTES


@SHORT
@given(idx_files())
def test_fuzz_idx_reader(blob):
    _idx_property(blob)


@pytest.mark.slow
@LONG
@given(idx_files())
def test_fuzz_idx_reader_long(blob):
    _idx_property(blob)


label_arrays = st.one_of(
    st.lists(st.integers(-300, 300), min_size=1, max_size=8).map(lambda v: np.array(v, ">i4")),
    st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=8).map(
        lambda v: np.array(v, ">f4")
    ),
)


def _labels_property(labels: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as d:
        images, labels_path = Path(d) / "i-idx3", Path(d) / "l-idx1"
        images.write_bytes(idx_bytes(np.zeros((len(labels), 2, 2), np.uint8)))
        labels_path.write_bytes(idx_bytes(labels))
        out = bounded("idx labels", lambda: _pair(images, labels_path, 10), 4 * MB)
    native = labels.astype(labels.dtype.newbyteorder("="))
    valid = bool(np.all(np.isfinite(native)) and np.all(native == np.round(native)))
    valid = valid and bool(np.all((native >= 0) & (native <= 9)))
    assert (out is not None) == valid  # accepted exactly when every label is a class
    if out is not None:
        assert out[1].tolist() == native.astype(np.int64).tolist()


@SHORT
@given(label_arrays)
def test_fuzz_idx_labels(labels):
    _labels_property(labels)


@pytest.mark.slow
@LONG
@given(label_arrays)
def test_fuzz_idx_labels_long(labels):
    _labels_property(labels)


# --- the CIFAR-10 unpickler -------------------------------------------------------------------


def _valid_batches() -> list[bytes]:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    labels = [1, 0, 9]
    d = {"batch_label": "b", "labels": labels, "data": data, "filenames": ["a.png", "b.png", "c.png"]}
    return [
        py2_pickle(d),  # what the official files are
        pickle.dumps({k.encode(): v for k, v in d.items()}, protocol=2),
        pickle.dumps({"data": data, "labels": np.array(labels)}, protocol=5),
    ]


VALID_BATCHES = _valid_batches()
GLOBALS = [
    b"cnumpy.core.multiarray\n_reconstruct\n",
    b"cnumpy._core.multiarray\nscalar\n",
    b"cnumpy\nndarray\n",
    b"cnumpy\ndtype\n",
    b"c__builtin__\nset\n",
    b"cbuiltins\nfrozenset\n",
    b"c__builtin__\nbytearray\n",
    b"c_codecs\nencode\n",
    b"cos\nsystem\n",
    b"cbuiltins\neval\n",
]
OPCODES = [b"(", b")", b"]", b"}", b"N", b"\x88", b"\x89", b"t", b"l", b"d", b"s", b"u", b"a", b"e", b"R", b"b"]
OPCODES += [b"\x85", b"\x86", b"\x87", b"0", b"2", b"1", b"\x94", b"\x8f", b"\x90", b"\x91", b"\x81", b"."]


@st.composite
def opcode_streams(draw) -> bytes:
    """Random pickles from the opcodes and globals a CIFAR pickle uses, and some it must refuse."""
    parts = [b"\x80\x02"]
    for _ in range(draw(st.integers(1, 60))):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            parts.append(draw(st.sampled_from(GLOBALS)))
        elif kind == 1:
            parts.append(b"K" + bytes([draw(st.integers(0, 255))]))
        elif kind == 2:
            parts.append(b"J" + struct.pack("<i", draw(st.integers(-(2**31), 2**31 - 1))))
        elif kind == 3:
            b = draw(st.binary(max_size=40))
            parts.append(b"U" + bytes([len(b)]) + b)
        elif kind == 4:
            parts.append(draw(st.sampled_from([b"h", b"q"])) + bytes([draw(st.integers(0, 8))]))
        else:
            parts.append(draw(st.sampled_from(OPCODES)))
    return b"".join(parts) + b"."


cifar_inputs = st.one_of(st.sampled_from(VALID_BATCHES).flatmap(mutated), opcode_streams())


def _cifar_property(payload: bytes) -> None:
    out = bounded("cifar pickle", lambda: _batch(payload, "fuzz"), 32 * len(payload) + 4 * MB)
    if out is not None:
        x, y = out
        assert x.dtype == np.uint8 and x.shape[1:] == (3, 32, 32) and len(x) == len(y) > 0
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() <= 9
    bounded("cifar unpickler", lambda: safe_unpickle(payload, "fuzz"), 32 * len(payload) + 4 * MB)


@SHORT
@given(cifar_inputs)
def test_fuzz_cifar_unpickler(payload):
    _cifar_property(payload)


@pytest.mark.slow
@LONG
@given(cifar_inputs)
def test_fuzz_cifar_unpickler_long(payload):
    _cifar_property(payload)


# --- the CIFAR-10 tarball -----------------------------------------------------------------------


def _valid_tar() -> bytes:
    """An uncompressed tar of the six batches (one image each) and batches.meta, as the archive lays them out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in [*CIFAR_BATCHES, "batches.meta"]:
            data = VALID_BATCHES[0] if name != "batches.meta" else py2_pickle({"label_names": ["a"] * 10})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# The tar is mutated before it is gzipped: mutations of the gzip stream would mostly stop at its CRC.
tar_inputs = mutated(_valid_tar(), 6).map(lambda b: gzip.compress(b, mtime=0))


def _tar_property(archive: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cifar-10-python.tar.gz"
        path.write_bytes(archive)
        # An entry is read into one buffer of its declared size: at most the cap, and at most what the archive can hold.
        limit = min(MAX_MEMBER_BYTES, len(archive) * MAX_DEFLATE_RATIO) + 8 * MB
        out = bounded("cifar tarball", lambda: _read_members(path), limit)
    if out is not None:
        assert all(isinstance(out[n], bytes) and len(out[n]) <= MAX_MEMBER_BYTES for n in CIFAR_BATCHES)


@SHORT
@given(tar_inputs)
def test_fuzz_cifar_tarball(archive):
    _tar_property(archive)


@pytest.mark.slow
@LONG
@given(tar_inputs)
def test_fuzz_cifar_tarball_long(archive):
    _tar_property(archive)


# --- image folders ----------------------------------------------------------------------------


def _image_bytes(fmt: str, size: tuple[int, int], mode: str) -> bytes:
    im = Image.new(mode, size, 0)
    im.paste(255 if mode == "L" else (255, 128, 0), (0, 0, size[0] // 2, size[1] // 2))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


IMAGES = [
    _image_bytes(fmt, size, mode)
    for fmt, size, mode in [
        ("PNG", (12, 9), "L"),
        ("JPEG", (16, 16), "RGB"),
        ("BMP", (7, 5), "RGB"),
        ("GIF", (8, 8), "L"),
    ]
]
EXTENSIONS = {b"\x89PNG": ".png", b"\xff\xd8": ".jpg", b"BM": ".bmp", b"GIF8": ".gif"}


def _extension(data: bytes) -> str:
    return next((ext for magic, ext in EXTENSIONS.items() if data.startswith(magic)), ".png")


# Four to six files in two classes, each as written or mutated: enough for a train and a test set
# when few are broken, so both the accepted and the refused paths are taken.
folder_inputs = st.lists(
    st.one_of(st.sampled_from(IMAGES), st.sampled_from(IMAGES).flatmap(lambda b: mutated(b, 3))),
    min_size=4,
    max_size=6,
)


def _folder_property(files: list[bytes]) -> None:
    from digitlab.data.folder import load_folder

    with tempfile.TemporaryDirectory() as d:
        for i, data in enumerate(files):  # alternate between two classes
            (Path(d) / f"c{i % 2}").mkdir(exist_ok=True)
            (Path(d) / f"c{i % 2}" / f"{i}{_extension(data)}").write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skipped files warn; the result lists them
            data = bounded("image folder", lambda: load_folder(d, progress=False, workers=1, cache=False), 64 * MB)
    if data is not None:
        assert data.train_x.dtype == torch.uint8 and data.train_x.shape[1:] in [(1, 28, 28), (3, 32, 32)]
        assert len(data.train_x) + len(data.test_x) + len(data.skipped) == len(files)
        assert int(data.train_y.max()) < len(data.classes)


@SHORT
@given(folder_inputs)
def test_fuzz_image_folders(files):
    _folder_property(files)


@pytest.mark.slow
@LONG
@given(folder_inputs)
def test_fuzz_image_folders_long(files):
    _folder_property(files)


# --- the download checksum path -----------------------------------------------------------------


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


CONTENT = idx_bytes(np.arange(300, dtype=np.uint8).reshape(3, 10, 10))
download_inputs = st.one_of(
    mutated(gzip.compress(CONTENT, mtime=0)), mutated(gzip.compress(CONTENT, compresslevel=1) * 2), st.binary()
)


def _checksum_property(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ".part-fuzz-x.gz"  # a temporary name, as downloads check them
        path.write_bytes(data)
        ok = bounded("download checksum", lambda: checksum_ok(path, ("0" * 32, md5(CONTENT))), 4 * MB)
        assert bounded("download checksum", lambda: checksum_ok(path, md5(data)), 4 * MB) is True
    try:
        content = gzip.decompress(data)
    except Exception:
        content = None
    if content is not None:  # a gzip stream that Python reads whole: its content decides
        assert ok == (content == CONTENT)


@SHORT
@given(download_inputs)
def test_fuzz_download_checksums(data):
    _checksum_property(data)


@pytest.mark.slow
@LONG
@given(download_inputs)
def test_fuzz_download_checksums_long(data):
    _checksum_property(data)


# --- one test per defect of issue 14, items 5-8 -----------------------------------------------
# Items 5 (IDX), 6 (CIFAR pickles) and 8 (downloads) have theirs beside the module's other tests:
# tests/test_data_mnist.py, test_data_cifar10.py and test_data_download.py ("hostile" sections).


def test_image_folder_pixel_bombs_are_skipped_within_memory(tmp_path):
    """Item 7: PNGs of 64 and 144 megapixels, a few KB each, are skipped by the pixel limits, not decoded."""
    from digitlab.data.folder import load_folder

    bombs = []
    for side in (8000, 12000):  # over digitlab's 40-megapixel limit; over Pillow's own too
        buf = io.BytesIO()
        Image.new("1", (side, side)).save(buf, format="PNG")
        bombs.append(buf.getvalue())
    assert max(map(len, bombs)) < 200_000
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            (tmp_path / c / f"{i}.png").write_bytes(IMAGES[0])
            (tmp_path / c / f"bomb{i}.png").write_bytes(bombs[i % 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = bounded(
            "image folder bombs", lambda: load_folder(tmp_path, progress=False, workers=1, cache=False), 64 * MB
        )
    assert len(data.train_x) + len(data.test_x) == 6 and len(data.skipped) == 6
    assert all("pixels" in reason for reason in data.skipped)
    assert any("over the limit of 40 megapixels" in reason for reason in data.skipped)
