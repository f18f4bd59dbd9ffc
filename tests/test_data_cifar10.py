"""CIFAR-10 pickles: loading from a folder or the tarball, and refusing unsafe pickles (data/cifar10.py)."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from digitlab.data import load_dataset
from digitlab.data.cifar10 import CLASSES, safe_unpickle
from digitlab.errors import DigitlabError

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


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
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def batch_pickle(n: int, seed: int) -> bytes:
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
    for i, name in enumerate(BATCHES):
        (d / name).write_bytes(batch_pickle(n, i))
    if meta:
        (d / "batches.meta").write_bytes(py2_pickle({"label_names": list(CLASSES), "num_vis": 3072}))
    return d


def make_tarball(batches_dir: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(batches_dir, arcname="cifar-10-batches-py")
    return out


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/digitlab-pwned",))


def test_load_from_folder(tmp_path, isolated_data_env):
    d = tiny_cifar(tmp_path)
    data = load_dataset("cifar10", tmp_path, download=False)
    assert data.train_x.shape == (20, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (4, 3, 32, 32) and data.test_y.dtype == torch.int64
    assert data.classes == CLASSES
    assert data.mean == (0.4914, 0.4822, 0.4465) and data.std == (0.2470, 0.2435, 0.2616)
    # channel-first layout: the first 1024 bytes of a row are the red plane
    raw = pickle.loads((d / "test_batch").read_bytes(), encoding="bytes")[b"data"]
    np.testing.assert_array_equal(data.test_x[1, 0].reshape(-1).numpy(), raw[1, :1024])
    assert data.source == str(d)


def test_load_from_tarball_and_batches_dir(tmp_path, isolated_data_env):
    src = tiny_cifar(tmp_path / "src")
    (tmp_path / "cifar10").mkdir()
    make_tarball(src, tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    data = load_dataset("cifar-10", tmp_path, download=False)
    assert data.train_x.shape == (20, 3, 32, 32) and data.source.endswith("cifar-10-python.tar.gz")
    # pointing straight at the extracted folder works too
    assert load_dataset("cifar10", src, download=False).test_x.shape == (4, 3, 32, 32)


def test_missing_meta_falls_back_to_standard_names(tmp_path, isolated_data_env):
    tiny_cifar(tmp_path, meta=False)
    assert load_dataset("cifar10", tmp_path, download=False).classes == CLASSES


def test_python3_pickles_with_str_keys(tmp_path, isolated_data_env):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for i, name in enumerate(BATCHES):
        arr = np.full((2, 3072), i, np.uint8)
        (d / name).write_bytes(pickle.dumps({"data": arr, "labels": [1, 2]}, protocol=pickle.HIGHEST_PROTOCOL))
    data = load_dataset("cifar10", tmp_path, download=False)
    assert data.train_y.tolist() == [1, 2] * 5 and int(data.test_x.max()) == 5


def test_malicious_pickle_is_refused(tmp_path, isolated_data_env):
    marker = Path("/tmp/digitlab-pwned")
    marker.unlink(missing_ok=True)
    d = tiny_cifar(tmp_path)
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DigitlabError, match=r"data_batch_3.*refusing to load (posix|os|nt)\.system"):
        load_dataset("cifar10", tmp_path, download=False)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(eval, protocol=2),  # builtins.eval by reference
    b"cos\nsystem\n(S'true'\ntR.",  # hand-written protocol-0 GLOBAL + REDUCE
    pickle.dumps(io.BytesIO, protocol=2),
])  # fmt: skip
def test_safe_unpickle_rejects_globals(payload):
    with pytest.raises(DigitlabError, match="refusing to load"):
        safe_unpickle(payload, "evil")


def test_safe_unpickle_allows_numpy():
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = safe_unpickle(pickle.dumps({"a": arr, "b": np.float64(2.5), "c": {1, 2}}, protocol=2), "ok")
    np.testing.assert_array_equal(out["a"], arr)
    assert out["b"] == 2.5 and out["c"] == {1, 2}


def test_truncated_pickle(tmp_path, isolated_data_env):
    d = tiny_cifar(tmp_path)
    (d / "test_batch").write_bytes(batch_pickle(4, 0)[:200])
    with pytest.raises(DigitlabError, match="test_batch.*(corrupt|truncated|not a valid)"):
        load_dataset("cifar10", tmp_path, download=False)


def test_wrong_shape(tmp_path, isolated_data_env):
    d = tiny_cifar(tmp_path)
    (d / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DigitlabError, match=r"data_batch_1.*\(N, 3072\)"):
        load_dataset("cifar10", tmp_path, download=False)


def test_corrupt_tarball(tmp_path, isolated_data_env):
    src = tiny_cifar(tmp_path / "src")
    tgz = make_tarball(src, tmp_path / "cifar-10-python.tar.gz")
    tgz.write_bytes(tgz.read_bytes()[: tgz.stat().st_size // 2])
    with pytest.raises(DigitlabError, match=r"cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", tmp_path, download=False)


def test_missing_batch(tmp_path, isolated_data_env):
    d = tiny_cifar(tmp_path / "x")
    (d / "data_batch_5").unlink()
    tgz = make_tarball(d, tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DigitlabError, match="missing CIFAR-10 batch file.*data_batch_5"):
        load_dataset("cifar10", tgz.parent, download=False)


def test_not_found_without_download(tmp_path, isolated_data_env):
    with pytest.raises(DigitlabError, match=r"cifar10 files not found(.|\n)*cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", tmp_path, download=False)
