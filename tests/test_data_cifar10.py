"""CIFAR-10 pickles: loading from a folder or the tarball, and refusing unsafe pickles (data/cifar10.py)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CIFAR_BATCHES, batch_pickle, tiny_cifar
from digitlab.data import load_dataset
from digitlab.data.cifar10 import CLASSES, MAX_MEMBER_BYTES, MAX_TAR_MEMBERS, _batch, safe_unpickle
from digitlab.errors import DigitlabError


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
    for i, name in enumerate(CIFAR_BATCHES):
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


# --- hostile files (issue 14, item 6) -----------------------------------------------------


def traced_peak(fn) -> int:
    """Peak bytes that Python and numpy allocated while ``fn`` ran."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def refused(payload: bytes, match: str) -> int:
    def run():
        with pytest.raises(DigitlabError, match=match):
            _batch(payload, "evil")

    return traced_peak(run)


def test_bytearray_bomb_is_refused():
    """34 bytes asking for bytearray(1 GB)."""
    payload = b"c__builtin__\nbytearray\n(J\x00\x00\x00@tR."
    assert refused(payload, r"refusing to load __builtin__\.bytearray") < 1 << 20


def test_memo_shared_list_bomb_is_refused_before_flattening():
    """Labels nested 9 deep through shared references: a few hundred bytes, 10**9 values if flattened."""
    nested: list = [0] * 10
    for _ in range(8):
        nested = [nested] * 10
    payload = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": nested}, protocol=2)
    assert len(payload) < 14_000
    assert refused(payload, "labels must be integers, label 0 is a list") < 1 << 20


def test_self_referencing_list_is_refused():
    labels: list = [1, 2]
    labels.append(labels)
    payload = pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": labels}, protocol=2)
    refused(payload, "label 2 is a list")


class Uninitialised:
    def __reduce__(self):
        return (np.ndarray, ((100000, 3072), np.dtype(np.uint8)))


class Reconstructed:
    def __reduce__(self):
        return (np.ndarray(0).__reduce__()[0], (np.ndarray, (100000, 3072), b"B"))


@pytest.mark.parametrize("array", [Uninitialised(), Reconstructed()])
def test_uninitialised_arrays_are_refused(array):
    """np.ndarray((100000, 3072)) would be 100,000 images of whatever memory held."""
    payload = pickle.dumps({b"data": array, b"labels": [0] * 100000}, protocol=2)
    assert refused(payload, r"evil: (corrupt|not a valid)") < 1 << 20


@pytest.mark.parametrize("codec", ["rot13", "zlib", "no-such-codec", "utf-8"])
def test_codecs_other_than_latin1_are_refused(codec):
    payload = f"c_codecs\nencode\n(Vabc\nV{codec}\ntR.".encode()
    with pytest.raises(DigitlabError, match=f"refusing codec '{codec}'"):
        safe_unpickle(payload, "evil")


def test_tuple_keys_nested_through_shared_references_are_refused():
    """Hashing a tuple nested 100 deep through shared references would never end (built by hand: Python would hash it)."""
    nest = b")q\x00" + b"h\x00h\x00\x86q\x00" * 100  # (), then t = (t, t) a hundred times, memo slot 0
    payload = b"\x80\x02}" + nest + b"K\x01s."  # {t: 1}
    with pytest.raises(DigitlabError, match="refusing a tuple as a dict key"):
        safe_unpickle(payload, "evil")


def test_memo_bomb_is_refused():
    payload = b"\x80\x04" + b"N\x94" * (200_000) + b"."
    with pytest.raises(DigitlabError, match="more than 100,000 memoized objects"):
        safe_unpickle(payload, "evil")


def test_state_of_anything_but_numpy_cannot_be_set():
    payload = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}, protocol=2)
    # BUILD on the dict itself (SETSTATE of a dict would write attributes on it or fail with a traceback)
    with pytest.raises(DigitlabError, match="refusing to set the state of a dict"):
        safe_unpickle(payload[:-1] + b"}b.", "evil")


def test_numpy_still_loads_every_way_it_pickles():
    arr = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072)
    for protocol in (2, 4, 5):
        x, y = _batch(pickle.dumps({"data": arr, "labels": np.array([3, 4])}, protocol=protocol), "ok")
        np.testing.assert_array_equal(x.reshape(2, 3072), arr)
        assert y.tolist() == [3, 4]


def test_float_and_out_of_range_labels_are_refused():
    data = np.zeros((2, 3072), np.uint8)
    with pytest.raises(DigitlabError, match="label 1 is a float"):
        _batch(pickle.dumps({b"data": data, b"labels": [1, 2.5]}), "x")
    with pytest.raises(DigitlabError, match="found one beyond 64 bits"):
        _batch(pickle.dumps({b"data": data, b"labels": [1, 10**30]}), "x")
    with pytest.raises(DigitlabError, match=r"labels must be in 0\.\.9, found 1\.\.10"):
        _batch(pickle.dumps({b"data": data, b"labels": [1, 10]}), "x")
    with pytest.raises(DigitlabError, match="2 images but 3 labels"):
        _batch(pickle.dumps({b"data": data, b"labels": [1, 2, 3]}), "x")


def test_oversized_tarball_member_is_refused_before_reading(tmp_path, isolated_data_env):
    """A 41 MB entry of zeros compresses to a few dozen KB; its declared size is refused from the header."""
    src = tiny_cifar(tmp_path / "src")
    size = MAX_MEMBER_BYTES + 1
    tgz = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    tgz.parent.mkdir()
    with tarfile.open(tgz, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
        for name in CIFAR_BATCHES[1:]:
            tar.add(src / name, arcname=f"cifar-10-batches-py/{name}")
    assert tgz.stat().st_size < 1 << 20

    def run():
        with pytest.raises(DigitlabError, match=f"data_batch_1 declares {size:,} bytes"):
            load_dataset("cifar10", tmp_path, download=False)

    assert traced_peak(run) < 8 << 20


def test_long_name_bomb_is_refused(tmp_path, isolated_data_env):
    """A GNU long-name header that tarfile would read whole."""
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("x" * (MAX_MEMBER_BYTES + 1)), io.BytesIO())
    with pytest.raises(DigitlabError, match="not the CIFAR-10 archive"):
        load_dataset("cifar10", tmp_path, download=False)


def test_archive_of_many_entries_is_refused(tmp_path, isolated_data_env):
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for i in range(MAX_TAR_MEMBERS + 1):
            tar.addfile(tarfile.TarInfo(f"f{i}"), io.BytesIO())
    with pytest.raises(DigitlabError, match=f"more than {MAX_TAR_MEMBERS} entries"):
        load_dataset("cifar10", tmp_path, download=False)


def test_oversized_batch_file_is_refused(tmp_path, isolated_data_env):
    d = tiny_cifar(tmp_path)
    with open(d / "data_batch_2", "wb") as f:
        f.truncate(MAX_MEMBER_BYTES + 1)  # sparse: no disk used
    with pytest.raises(DigitlabError, match=r"data_batch_2 is 41,943,041 bytes"):
        load_dataset("cifar10", tmp_path, download=False)


def test_entry_larger_than_the_archive_can_hold_is_refused_before_a_buffer_is_made(tmp_path, isolated_data_env):
    import gzip

    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    info.size = 30_000_000  # under the cap, but a 200-byte archive cannot inflate to it
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(gzip.compress(info.tobuf(tarfile.USTAR_FORMAT)))

    def run():
        with pytest.raises(DigitlabError, match="is truncated: cifar-10-batches-py/data_batch_1 declares 30,000,000"):
            load_dataset("cifar10", tmp_path, download=False)

    assert traced_peak(run) < 4 << 20
