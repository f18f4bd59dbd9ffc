"""Shared fixtures and helpers. Tests make their own small data; only `mnist_dir` points at real files.

Test modules import the helpers from here (``from conftest import tiny_mnist``), never from
each other, and get the fixtures (``mnist_dir``, ``mnist_test``, ``tiny_data``, ...) from pytest.

Real MNIST is looked for where a user has it: ``$DIGITLAB_DATA``, the user cache that
``digitlab data download mnist`` fills, and ``<repo>/../shared/data``. Locally, a test that
needs it is skipped with a message saying what to put where; in CI (``CI=true``) it fails, so
a CI run without the data is red instead of green with dozens of skips.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import pickle
import shutil
import struct
import tarfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.data.cifar10 import CLASSES as CIFAR10_CLASSES
from digitlab.data.cifar10_jpeg import CLASSES as JPEG_CLASSES
from digitlab.data.locate import IDX_FILES, cache_dir
from digitlab.data.mnist import read_idx
from digitlab.engine.checkpoint import save_checkpoint
from digitlab.models import create_model

REPO = Path(__file__).resolve().parent.parent
MNIST_FILES = [stem + ".gz" for stem in IDX_FILES.values()]
USER_CACHE = cache_dir()  # read before any test changes $XDG_CACHE_HOME


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def mnist_candidates(env: str | None, cache: Path, repo: Path) -> list[Path]:
    """Folders that may hold the four MNIST .gz files, in the order digitlab itself searches."""
    found = []
    if env:
        root = Path(os.path.abspath(Path(env).expanduser()))
        found += [root, root / "mnist", root / "MNIST" / "raw"]
    found += [cache / "mnist", cache, repo.parent / "shared" / "data" / "mnist"]
    return found


def find_mnist(candidates: list[Path]) -> Path | None:
    return next((d.resolve() for d in candidates if all((d / f).is_file() for f in MNIST_FILES)), None)


def missing_data(message: str) -> None:
    """Skip (locally) or fail (in CI) a test whose real data is not there."""
    if in_ci():
        pytest.fail(f"{message}\n(CI=true: missing data fails the run instead of skipping)", pytrace=False)
    pytest.skip(message)


def mnist_missing_message(candidates: list[Path]) -> str:
    return (
        f"real MNIST not found: put {', '.join(MNIST_FILES)} in one of "
        + ", ".join(str(d) for d in candidates)
        + "; `digitlab data download mnist` fetches them into the user cache, or set DIGITLAB_DATA"
        + " to the folder that holds them"
    )


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder holding the four real MNIST .gz files."""
    candidates = mnist_candidates(os.environ.get("DIGITLAB_DATA"), USER_CACHE, REPO)
    found = find_mnist(candidates)
    if found is None:
        missing_data(mnist_missing_message(candidates))
    return found  # type: ignore[return-value]


@pytest.fixture
def isolated_data_env(tmp_path, monkeypatch) -> Path:
    """No $DIGITLAB_DATA or $DIGITLAB_MIRRORS, and a fresh cache dir: tests never see real user data."""
    monkeypatch.delenv("DIGITLAB_DATA", raising=False)
    monkeypatch.delenv("DIGITLAB_MIRRORS", raising=False)
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache / "digitlab"


@pytest.fixture
def cpp_compiler() -> None:
    """Skip where torch.compile cannot build its CPU kernels (no C++ compiler)."""
    if not (shutil.which("g++") or shutil.which("c++")):
        pytest.skip("torch.compile on CPU needs a C++ compiler (g++)")


def tiny_image_data(n_train: int = 256, n_test: int = 64, seed: int = 0):
    """Ten classes of 28x28 images: a bright square whose position encodes the class, plus noise."""
    import torch

    from digitlab.data.base import ImageData

    g = torch.Generator().manual_seed(seed)

    def make(n: int):
        y = torch.randint(0, 10, (n,), generator=g)
        x = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
        for i, c in enumerate(y.tolist()):
            r, col = 2 + (c // 5) * 12, 2 + (c % 5) * 5
            x[i, 0, r : r + 8, col : col + 4] = 255
        return x, y

    trx, try_ = make(n_train)
    tex, tey = make(n_test)
    return ImageData("tiny", trx, try_, tex, tey, [str(i) for i in range(10)], (0.2,), (0.3,))


@pytest.fixture
def tiny_data():
    """A factory of small learnable datasets: ``tiny_data(n_train=256, n_test=64, seed=0)``."""
    return tiny_image_data


# ---- MNIST-style IDX files -----------------------------------------------------------------------

STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def idx_bytes(arr: np.ndarray) -> bytes:
    """``arr`` as the bytes of an IDX file (uint8, int8, big-endian int32 or float32)."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    arr = np.asarray(arr)
    if arr.dtype.itemsize > 1:
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    header = bytes([0, 0, code[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    """An IDX file at ``path``, gzipped when its name ends in .gz."""
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def tiny_mnist(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True, seed: int = 0) -> dict:
    """Four small IDX files with random 28x28 images and labels 0..9."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        STEMS[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        STEMS[1]: (np.arange(n_train) % 10).astype(np.uint8),
        STEMS[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        STEMS[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arr)
    return arrays


# ---- CIFAR-10's python pickles -------------------------------------------------------------------

CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class Py2Pickler(pickle._Pickler):
    """Pickles str and bytes the way Python 2 pickled its str (BINSTRING), as in the real CIFAR files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        op = pickle.SHORT_BINSTRING + bytes([len(b)]) if len(b) < 256 else pickle.BINSTRING + struct.pack("<i", len(b))
        self.write(op + b)
        self.memoize(obj)

    def save_py2_global(self, obj, name=None):
        module = "numpy.core.multiarray" if obj.__module__.endswith("multiarray") else obj.__module__
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str
    dispatch[type] = save_py2_global


def py2_pickle(obj) -> bytes:
    """``obj`` pickled as Python 2 pickled it (protocol 2, str as BINSTRING)."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def batch_pickle(n: int, seed: int) -> bytes:
    """One CIFAR-10 batch file's bytes: ``n`` random images and labels."""
    rng = np.random.default_rng(seed)
    d = {
        "batch_label": "tiny batch",
        "labels": [int(v) for v in rng.integers(0, 10, n)],
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "filenames": ["x.png"] * n,
    }
    return py2_pickle(d)


def tiny_cifar(folder: Path, n: int = 4, meta: bool = True) -> Path:
    """cifar-10-batches-py/ with n images per batch, pickled like the Python 2 originals."""
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(CIFAR_BATCHES):
        (d / name).write_bytes(batch_pickle(n, i))
    if meta:
        (d / "batches.meta").write_bytes(py2_pickle({"label_names": list(CIFAR10_CLASSES), "num_vis": 3072}))
    return d


# ---- the CIFAR-10 JPEG copy ----------------------------------------------------------------------

JPEG_TRAIN, JPEG_TEST = 20, 5  # per class: 250 images, the layout and format of the real copy


def jpeg_image(label: int, i: int) -> np.ndarray:
    """A 32x32 RGB image whose mean colour says its class (so a label mix-up shows)."""
    rng = np.random.default_rng(label * 1000 + i)
    base = np.array([25 * label, 255 - 25 * label, 128], np.float64)
    return np.clip(base + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)


def make_copy(root: Path, quality: int = 75) -> Path:
    """``root/train/<class>/NNNN.jpg`` and ``root/test/<class>/NNNN.jpg``, as the real copy is laid out."""
    for split, n in (("train", JPEG_TRAIN), ("test", JPEG_TEST)):
        for label, name in enumerate(JPEG_CLASSES):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(jpeg_image(label, i)).save(root / split / name / f"{i:04d}.jpg", quality=quality)
    return root


def make_archive(copy: Path, path: Path) -> Path:
    """``copy`` packed as the real archive is: one cifar10-jpeg/ folder in a .tar.gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(copy, arcname="cifar10-jpeg")
    return path


# ---- run directories -----------------------------------------------------------------------------

RUN_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "train_time", "eval_time", "elapsed"]


def make_run(path, *, planned=3, done=3, seed=0, lr=0.1, model="fast", preset=None, accs=None, age=3600.0):
    """A run directory as `digitlab train` writes it: config.json, metrics.csv with ``done`` epochs.

    ``age``: seconds since the files were last written (an old unfinished run is interrupted).
    """
    path.mkdir(parents=True)
    config = {
        "data": {"dataset": "digits", "limit_train": None},
        "model": {"model": model, "width": None},
        "train": {"epochs": planned, "lr": lr, "seed": seed, "dry_run": False},
        "name": path.name,
        "runs_dir": str(path.parent),
        "preset": preset,
        "provenance": {"git": "abc"},
    }
    (path / "config.json").write_text(json.dumps(config))
    accs = accs or [0.5 + 0.1 * e for e in range(1, done + 1)]
    if done:
        with (path / "metrics.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, RUN_FIELDS)
            w.writeheader()
            for e in range(1, done + 1):
                test = accs[e - 1]
                w.writerow(
                    {
                        "epoch": e,
                        "lr": lr,
                        "train_loss": 1.0 / e,
                        "train_acc": 0.5,
                        "test_loss": 1.2 / e if test is not None else "",
                        "test_acc": test if test is not None else "",
                        "train_time": 1.0,
                        "eval_time": 0.1,
                        "elapsed": 1.1 * e,
                    }
                )
    stamp = time.time() - age
    for f in path.iterdir():
        os.utime(f, (stamp, stamp))
    return path


# ---- MNIST test digits, images like the ones users send, a stand-in predictor --------------------


def png(img: Image.Image) -> bytes:
    """``img`` encoded as PNG."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def paper_row(digits: list[np.ndarray]) -> Image.Image:
    """Several digits written in a row with dark ink on light paper, like a scan (4x scale)."""
    ink = [255 - np.pad(d, 4) for d in digits]  # (36, 36) each, dark on light
    row = np.concatenate(
        [np.full((36, 12), 255, np.uint8)] + [np.hstack([d, np.full((36, 12), 255, np.uint8)]) for d in ink], axis=1
    )
    row = np.pad(row, ((10, 10), (0, 0)), constant_values=255)
    return Image.fromarray(row).resize((row.shape[1] * 4, row.shape[0] * 4), Image.BILINEAR)


@pytest.fixture(scope="module")
def mnist_test(mnist_dir):
    """(images (N, 28, 28) uint8, labels (N,)) of MNIST's test set; none of them seen in training."""
    return read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz"), read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")


def first_of(mnist_test, label: int, nth: int = 0) -> np.ndarray:
    """The ``nth`` test digit of class ``label``."""
    images, labels = mnist_test
    return images[np.flatnonzero(labels == label)[nth]]


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory):
    """An (untrained) RGB image-classification checkpoint, like a CIFAR-10 or image-folder run."""
    args = {"num_classes": 3, "in_channels": 3, "image_size": 32}
    model = create_model("mlp", **args)
    ckpt = {
        "model_name": "mlp",
        "model_args": args,
        "state_dict": model.state_dict(),
        "classes": ["airplane", "cat", "ship"],
        "channels": 3,
        "image_size": 32,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "dataset": "my-photos",
        "task": "images",
    }
    return save_checkpoint(tmp_path_factory.mktemp("image-model") / "best.pt", ckpt)


def photo(seed: int = 0) -> Image.Image:
    """A small colour 'photo': smooth random colours."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((160, 120), Image.BILINEAR)


class Answer:
    """What a stand-in's ``predict`` returns: ``to_dict()`` gives ``out`` back."""

    def __init__(self, out: dict) -> None:
        self.out = out

    def to_dict(self, include_input: bool = True) -> dict:
        return self.out


class StandIn:
    """Follows the Predictor contract; ``behaviour(image)`` decides what predict does."""

    info = {
        "name": "stand-in",
        "classes": [str(i) for i in range(10)],
        "task": "digits",
        "channels": 1,
        "image_size": 28,
        "accuracy": None,
        "dataset": "mnist",
    }

    def __init__(self, behaviour=None) -> None:
        self.behaviour = behaviour or (lambda image: None)

    def predict(self, image, top_k=3, multi=True, include_input=False):
        self.behaviour(image)
        return Answer({"source": None, "status": "empty", "text": None, "items": [], "error": None, "elapsed_ms": 0.0})


# ---- a served app --------------------------------------------------------------------------------


@contextmanager
def running(app):
    """``app`` under uvicorn on a free loopback port (port 0); yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def pytest_collection_modifyitems(config, items):
    """The slow tests of the fuzz files are the long campaigns: mark them `campaign`, which the default
    run leaves out (pyproject's addopts); each has a short campaign that every run includes."""
    for item in items:
        if item.path.name.startswith("test_fuzz_") and item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.campaign)
