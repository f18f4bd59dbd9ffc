"""IDX reading, MNIST/Fashion-MNIST loading, and finding files (data/mnist.py, data/locate.py)."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch

from conftest import (
    REPO,
    STEMS,
    find_mnist,
    idx_bytes,
    missing_data,
    mnist_candidates,
    mnist_missing_message,
    tiny_mnist,
    write_idx,
)
from digitlab.data import list_datasets, load_dataset
from digitlab.data.locate import download_dir, find_idx_files, resolve_data_dir, search_roots
from digitlab.data.mnist import read_idx
from digitlab.errors import DigitlabError

# --- read_idx ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_read_idx_roundtrip_gz_and_raw(tmp_path, name):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / name, arr))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 7  # writable: torch.from_numpy must not warn


def test_read_idx_multibyte_big_endian(tmp_path):
    arr = np.array([[1, -2], [70000, 3]], dtype=">i4")
    out = read_idx(write_idx(tmp_path / "x-idx2-int", arr))
    assert out.dtype == np.int32 and out.dtype.byteorder in ("=", "<", "|")
    np.testing.assert_array_equal(out, arr.astype(np.int32))


def test_read_idx_truncated(tmp_path):
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    p = tmp_path / "cut-idx3-ubyte"
    p.write_bytes(data[:-100])
    with pytest.raises(DigitlabError, match=r"cut-idx3-ubyte.*truncated"):
        read_idx(p)


def test_read_idx_truncated_header(tmp_path):
    p = tmp_path / "h-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DigitlabError, match="truncated"):
        read_idx(p)


def test_read_idx_trailing_bytes(tmp_path):
    p = tmp_path / "extra-idx1-ubyte"
    p.write_bytes(idx_bytes(np.zeros(5, np.uint8)) + b"xx")
    with pytest.raises(DigitlabError, match="2 bytes after"):
        read_idx(p)


def test_read_idx_bad_magic_and_type(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 10)
    with pytest.raises(DigitlabError, match="bad magic"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x42\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DigitlabError, match="unknown IDX data type 0x42"):
        read_idx(p)


def test_read_idx_not_gzip(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_text("<html>404 Not Found</html>")
    with pytest.raises(DigitlabError, match=r"train-images-idx3-ubyte\.gz is not a gzip file"):
        read_idx(p)


def test_read_idx_truncated_gzip(tmp_path):
    p = tmp_path / "t-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.ones((50, 28, 28), np.uint8)))[:-30])
    with pytest.raises(DigitlabError, match=r"t-idx3-ubyte\.gz is (truncated|a corrupt gzip)"):
        read_idx(p)


def test_read_idx_corrupt_gzip(tmp_path):
    good = bytearray(gzip.compress(idx_bytes(np.arange(4000, dtype=np.uint8).reshape(10, 20, 20) % 7)))
    good[20:40] = b"\xff" * 20
    p = tmp_path / "c-idx3-ubyte.gz"
    p.write_bytes(bytes(good))
    with pytest.raises(DigitlabError, match=r"c-idx3-ubyte\.gz"):
        read_idx(p)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DigitlabError, match="cannot read"):
        read_idx(tmp_path / "nope")


# --- loading ----------------------------------------------------------------------------


def test_load_tiny_mnist(tmp_path, isolated_data_env):
    arrays = tiny_mnist(tmp_path / "d")
    data = load_dataset("mnist", tmp_path / "d", download=False)
    assert data.train_x.shape == (12, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (5, 1, 28, 28)
    assert data.train_y.dtype == torch.int64
    np.testing.assert_array_equal(data.train_x[:, 0].numpy(), arrays[STEMS[0]])
    assert data.classes == [str(i) for i in range(10)]
    assert data.mean == (0.1307,) and data.std == (0.3081,)
    assert data.source == str(tmp_path / "d")


def test_load_fashion_uses_same_reader(tmp_path, isolated_data_env):
    tiny_mnist(tmp_path / "fashion-mnist", gz=False)
    data = load_dataset("fashion-mnist", tmp_path, download=False)
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert data.mean == (0.2860,) and data.std == (0.3530,)


def test_mismatched_counts(tmp_path, isolated_data_env):
    tiny_mnist(tmp_path)
    write_idx(tmp_path / (STEMS[1] + ".gz"), np.zeros(11, np.uint8))
    with pytest.raises(DigitlabError, match="12 images but .* 11 labels"):
        load_dataset("mnist", tmp_path, download=False)


def test_labels_out_of_range(tmp_path, isolated_data_env):
    tiny_mnist(tmp_path)
    write_idx(tmp_path / (STEMS[3] + ".gz"), np.full(5, 12, np.uint8))
    with pytest.raises(DigitlabError, match=r"labels must be in 0\.\.9"):
        load_dataset("mnist", tmp_path, download=False)


def test_grayscale_and_resize_options(tmp_path, isolated_data_env):
    tiny_mnist(tmp_path)
    data = load_dataset("mnist", tmp_path, download=False, grayscale=False, image_size=32)
    assert data.train_x.shape == (12, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert len(data.mean) == 3 and data.mean != (0.1307,) * 3  # recomputed after conversion


def test_val_fraction(tmp_path, isolated_data_env):
    tiny_mnist(tmp_path, n_train=20)
    data = load_dataset("mnist", tmp_path, download=False, val_fraction=0.25)
    assert data.train_x.shape[0] == 15 and data.test_x.shape[0] == 5
    with pytest.raises(DigitlabError, match="validation fraction"):
        load_dataset("mnist", tmp_path, download=False, val_fraction=1.5)


def test_unknown_dataset_lists_names():
    with pytest.raises(DigitlabError) as exc:
        load_dataset("mnsit")
    msg = str(exc.value)
    assert "mnsit" in msg and all(n in msg for n in list_datasets()) and "folder" in msg


def test_names_are_forgiving(tmp_path, isolated_data_env):
    tiny_mnist(tmp_path / "FashionMNIST" / "raw")
    assert load_dataset("Fashion_MNIST", tmp_path, download=False).name == "fashion-mnist"


# --- locate -----------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["", "mnist", "MNIST/raw"])
def test_layouts(tmp_path, isolated_data_env, sub):
    tiny_mnist(tmp_path / sub if sub else tmp_path)
    files = find_idx_files("mnist", tmp_path)
    assert files is not None and files["train_images"].parent == (tmp_path / sub if sub else tmp_path)


def test_prefers_uncompressed_and_accepts_dotted_names(tmp_path, isolated_data_env):
    tiny_mnist(tmp_path, gz=True)
    tiny_mnist(tmp_path, gz=False)
    assert find_idx_files("mnist", tmp_path)["train_images"].name == STEMS[0]
    other = tmp_path / "dotted"
    other.mkdir()
    for stem in STEMS:
        (tmp_path / (stem + ".gz")).rename(other / (stem.replace("-idx", ".idx") + ".gz"))
    assert find_idx_files("mnist", other)["test_labels"].name == "t10k-labels.idx1-ubyte.gz"


def test_search_order(tmp_path, isolated_data_env, monkeypatch):
    tiny_mnist(tmp_path / "env" / "mnist", n_train=3)
    tiny_mnist(isolated_data_env / "mnist", n_train=4)
    assert load_dataset("mnist", download=False).train_x.shape[0] == 4  # the cache
    monkeypatch.setenv("DIGITLAB_DATA", str(tmp_path / "env"))
    assert load_dataset("mnist", download=False).train_x.shape[0] == 3  # $DIGITLAB_DATA before the cache
    tiny_mnist(tmp_path / "arg", n_train=5)
    assert load_dataset("mnist", tmp_path / "arg", download=False).train_x.shape[0] == 5  # argument first
    assert search_roots(tmp_path / "arg")[:2] == [tmp_path / "arg", tmp_path / "env"]


def test_mnist_and_fashion_folders_are_not_confused(tmp_path, isolated_data_env):
    tiny_mnist(tmp_path / "mnist")
    assert find_idx_files("fashion-mnist", tmp_path / "mnist") is None
    assert find_idx_files("mnist", tmp_path / "mnist") is not None


def test_download_dir(tmp_path, isolated_data_env):
    (tmp_path / "data").mkdir()
    (tmp_path / "mnist").mkdir()
    assert download_dir("mnist", tmp_path / "data") == tmp_path / "data" / "mnist"
    assert download_dir("mnist", tmp_path / "mnist") == tmp_path / "mnist"
    assert download_dir("cifar10") == isolated_data_env / "cifar10"


def test_missing_files_without_download_says_what_to_put_where(tmp_path, isolated_data_env):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DigitlabError) as exc:
        load_dataset("mnist", tmp_path / "empty", download=False)
    msg = str(exc.value)
    for stem in STEMS:
        assert stem + ".gz" in msg
    assert str(tmp_path / "empty") in msg and str(isolated_data_env) in msg


# --- the real thing ---------------------------------------------------------------------


def test_real_mnist(mnist_dir, isolated_data_env):
    data = load_dataset("mnist", mnist_dir, download=False)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert int(data.train_y.min()) == 0 and int(data.train_y.max()) == 9
    assert set(data.test_y.unique().tolist()) == set(range(10))
    assert abs(data.train_x.float().mean().item() / 255 - 0.1307) < 1e-3


def test_real_mnist_from_parent_dir(mnist_dir, isolated_data_env):
    if mnist_dir.name != "mnist":
        pytest.skip("the MNIST folder is not named mnist/")
    assert load_dataset("mnist", mnist_dir.parent, download=False).test_x.shape[0] == 10000


# --- hostile files (issue 14, item 5) -----------------------------------------------------


def test_gzip_bomb_is_refused_from_its_header(tmp_path):
    """256 KB of gzip that inflates to 256 MB, with a header declaring all of it: refused before inflating."""
    n = 1 << 28
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", n // 784, 28, 28)
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    parts = [comp.compress(header)]
    zeros = bytes(1 << 20)
    parts += [comp.compress(zeros) for _ in range(n >> 20)]
    p = tmp_path / "bomb-idx3-ubyte.gz"
    p.write_bytes(b"".join(parts) + comp.flush())
    assert p.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(
            DigitlabError, match=r"bomb-idx3-ubyte\.gz: IDX header declares 342392x28x28 values .* over the"
        ):
            read_idx(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # nothing near the declared gigabyte was allocated


def test_gzip_bomb_under_the_cap_stops_at_the_declared_size(tmp_path):
    """A header declaring 1 MB followed by 200 MB of zeros: refused after reading 1 MB + one chunk."""
    header = bytes([0, 0, 8, 1]) + struct.pack(">I", 1 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [comp.compress(header)] + [comp.compress(bytes(1 << 20)) for _ in range(200)]
    p = tmp_path / "long-idx1-ubyte.gz"
    p.write_bytes(b"".join(parts) + comp.flush())
    tracemalloc.start()
    try:
        with pytest.raises(DigitlabError, match="more than 1,048,576 bytes after the data"):
            read_idx(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.parametrize("ndim", [0, 5, 64, 255])
def test_too_many_dimensions(tmp_path, ndim):
    p = tmp_path / "d-idx"
    p.write_bytes(bytes([0, 0, 8, ndim]) + b"\x00\x00\x00\x01" * ndim)
    with pytest.raises(DigitlabError, match=f"declares {ndim} dimensions"):
        read_idx(p)


def test_dimension_product_past_64_bits(tmp_path):
    p = tmp_path / "o-idx"
    p.write_bytes(bytes([0, 0, 0x0E, 4]) + struct.pack(">4I", *[2**32 - 1] * 4))
    with pytest.raises(DigitlabError, match=r"4294967295x4294967295x4294967295x4294967295 values .* over the"):
        read_idx(p)


def test_empty_dimension(tmp_path):
    p = tmp_path / "e-idx"
    p.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 28, 28))
    with pytest.raises(DigitlabError, match=r"empty array \(0x28x28\)"):
        read_idx(p)


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.array([1, np.nan, 2, 3, 4], ">f4"), r"whole numbers, label 1 is .*nan"),
        (np.array([1, 2, 2.5, 3, 4], ">f4"), r"whole numbers, label 2 is .*2\.5"),
        (np.array([1, 2, np.inf, 3, 4], ">f4"), r"whole numbers, label 2 is .*inf"),
        (np.array([0, 1, 2, 3, -1], np.int8), r"labels must be in 0\.\.9, found -1\.\.3"),
    ],
)
def test_labels_nan_fractional_or_negative_are_refused(tmp_path, isolated_data_env, labels, message):
    tiny_mnist(tmp_path)
    write_idx(tmp_path / (STEMS[3] + ".gz"), labels)
    with pytest.raises(DigitlabError, match=message):
        load_dataset("mnist", tmp_path, download=False)


def test_whole_float_labels_are_accepted(tmp_path, isolated_data_env):
    tiny_mnist(tmp_path)
    write_idx(tmp_path / (STEMS[3] + ".gz"), np.array([4, 3, 2, 1, 0], ">f4"))
    assert load_dataset("mnist", tmp_path, download=False).test_y.tolist() == [4, 3, 2, 1, 0]


# --- data locations (issue 17, item 2) ----------------------------------------------------


@pytest.mark.parametrize("make", [None, "file"])
def test_a_data_dir_that_is_not_a_folder_is_refused_and_not_created(tmp_path, isolated_data_env, make):
    where = tmp_path / "shared" / "data"
    if make == "file":
        where.parent.mkdir()
        where.write_text("not a folder")
    state = "is not a folder" if make else "does not exist"
    with pytest.raises(DigitlabError, match=f"--data-dir {where} {state}; pass the folder that holds"):
        load_dataset("mnist", where)
    assert where.is_file() if make else not where.parent.exists()


def test_missing_digitlab_data_is_refused(tmp_path, isolated_data_env, monkeypatch):
    monkeypatch.setenv("DIGITLAB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DigitlabError, match=rf"\$DIGITLAB_DATA {tmp_path / 'nowhere'} does not exist"):
        load_dataset("mnist", download=False)
    assert not (tmp_path / "nowhere").exists()


def test_relative_data_dir_is_resolved_once(tmp_path, isolated_data_env, monkeypatch):
    tiny_mnist(tmp_path / "data" / "mnist", n_train=7)
    monkeypatch.chdir(tmp_path)
    absolute = resolve_data_dir("data")
    assert absolute == str(tmp_path / "data")
    monkeypatch.chdir(tmp_path / "data" / "mnist")  # a cd after resolving does not break it
    assert load_dataset("mnist", absolute, download=False).train_x.shape[0] == 7
    with pytest.raises(DigitlabError, match=rf"--data-dir {tmp_path / 'data' / 'mnist' / 'data'} does not exist "):
        load_dataset("mnist", "data", download=False)  # unresolved, the same words mean another folder
    monkeypatch.setenv("DIGITLAB_DATA", "../..")  # relative $DIGITLAB_DATA: from where it is read
    assert search_roots()[0] == tmp_path


def test_training_config_stores_the_absolute_data_dir(tmp_path, isolated_data_env, monkeypatch):
    from digitlab.config import RunConfig
    from digitlab.engine.train import load_data

    tiny_mnist(tmp_path / "d", n_train=6)
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig()
    cfg.data.data_dir, cfg.data.download = "d", False
    assert load_data(cfg).train_x.shape[0] == 6 and cfg.data.data_dir == str(tmp_path / "d")


def test_cli_refuses_a_missing_data_dir(tmp_path, isolated_data_env, capsys):
    from digitlab.cli import main

    assert main(["data", "download", "mnist", "--data-dir", str(tmp_path / "typo")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "typo").exists()


# --- the tests' own lookup of real data (tests/conftest.py; issue 17, item 3) -------------


def test_real_mnist_is_found_in_the_user_cache_that_data_download_fills(tmp_path):
    cache = tmp_path / "cache" / "digitlab"
    for stem in STEMS:  # what `digitlab data download mnist` leaves in the cache
        (cache / "mnist").mkdir(parents=True, exist_ok=True)
        (cache / "mnist" / (stem + ".gz")).write_bytes(b"")
    assert find_mnist(mnist_candidates(None, cache, tmp_path / "repo")) == cache / "mnist"
    (cache / "mnist" / (STEMS[2] + ".gz")).unlink()  # three of four is not the data set
    assert find_mnist(mnist_candidates(None, cache, tmp_path / "repo")) is None


def test_ci_runs_digitlab_data_is_searched(tmp_path, monkeypatch):
    """.ci/run exports DIGITLAB_DATA=<parent>/shared/data; a relative one is taken from the cwd."""
    monkeypatch.chdir(tmp_path)
    found = mnist_candidates("../shared/data", tmp_path / "c", tmp_path / "repo")
    assert found[1] == tmp_path.parent / "shared" / "data" / "mnist"
    assert "shared/data" in (REPO / ".ci" / "run").read_text()


def test_missing_data_skips_locally_and_fails_in_ci(monkeypatch, tmp_path):
    message = mnist_missing_message(mnist_candidates(None, tmp_path / "cache", tmp_path / "repo"))
    assert all(stem + ".gz" in message for stem in STEMS) and str(tmp_path / "cache" / "mnist") in message
    assert "digitlab data download mnist" in message
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="real MNIST not found"):
        missing_data(message)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: missing data fails the run"):
        missing_data(message)


def test_a_checkpoints_stored_data_dir_is_a_hint(tmp_path, isolated_data_env, monkeypatch, capsys):
    """The shipped model's config says ../shared/data; elsewhere, eval finds MNIST the usual way."""
    from digitlab.cli import main
    from digitlab.data.locate import stored_data_dir
    from digitlab.inference.predictor import default_model_path

    assert stored_data_dir(str(tmp_path)) == str(tmp_path)
    assert stored_data_dir(str(tmp_path / "gone")) is None and stored_data_dir(None) is None
    tiny_mnist(tmp_path / "data" / "mnist", n_train=20, n_test=10)
    monkeypatch.setenv("DIGITLAB_DATA", str(tmp_path / "data"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # no ../shared/data from here
    assert main(["eval", str(default_model_path()), "--out", str(tmp_path / "out"), "--json"]) == 0
    assert '"accuracy"' in capsys.readouterr().out


def test_resume_after_the_data_moved_finds_it_again(tmp_path, isolated_data_env, monkeypatch, capsys):
    """The run's recorded --data-dir is gone: --resume searches $DIGITLAB_DATA instead of failing."""
    from digitlab.cli import main

    tiny_mnist(tmp_path / "old" / "mnist", n_train=40, n_test=10)
    args = ["train", "--model", "mlp", "--epochs", "1", "--batch-size", "20", "--runs-dir", str(tmp_path / "runs")]
    assert main([*args, "--name", "r", "--data-dir", str(tmp_path / "old"), "--no-download", "-q"]) == 0
    (tmp_path / "old").rename(tmp_path / "new")
    monkeypatch.setenv("DIGITLAB_DATA", str(tmp_path / "new"))
    assert main(["train", "--resume", str(tmp_path / "runs" / "r"), "--epochs", "2", "-q"]) == 0
    assert "resuming r after epoch 1 of 2" in capsys.readouterr().out
