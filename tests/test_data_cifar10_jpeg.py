"""CIFAR-10 from a JPEG copy (data/cifar10_jpeg.py): archive and folder, found by `cifar10`, cached."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import JPEG_TEST, JPEG_TRAIN, jpeg_image, make_archive, make_copy, tiny_cifar
from digitlab.data import load_dataset
from digitlab.data.cifar10_jpeg import ARCHIVE, CLASSES, MEAN, STD, find_cifar10_jpeg, jpeg_quality, load_cifar10_jpeg
from digitlab.errors import DigitlabError


@pytest.fixture
def copy_dir(tmp_path) -> Path:
    return make_copy(tmp_path / "unpacked" / "cifar10-jpeg")


def check_cifar10(data, n_train=JPEG_TRAIN * 10, n_test=JPEG_TEST * 10) -> None:
    assert data.name == "cifar10" and data.classes == CLASSES
    assert data.mean == MEAN and data.std == STD  # CIFAR-10's normalisation, not the copy's own statistics
    assert data.train_x.shape == (n_train, 3, 32, 32) and data.test_x.shape == (n_test, 3, 32, 32)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert data.train_y.bincount().tolist() == [n_train // 10] * 10
    assert data.test_y.bincount().tolist() == [n_test // 10] * 10
    assert data.train_y[:20].tolist() == list(range(10)) * 2  # classes in turn: any prefix is balanced
    assert data.test_y[:10].tolist() == list(range(10))
    # each image's colour matches its label: red channel mean ~25 * label (classes 25 apart)
    red = data.train_x[:, 0].float().mean(dim=(1, 2))
    assert torch.allclose(red, 25.0 * data.train_y.float(), atol=12)  # noise clipped at 0 and 255


def test_archive_is_cifar10(tmp_path, copy_dir, isolated_data_env):
    arc = make_archive(copy_dir, tmp_path / "data" / "cifar10-jpeg" / "cifar10-jpeg.tar.gz")
    data = load_dataset("cifar10", tmp_path / "data")  # no pickles there: the JPEG copy is used
    check_cifar10(data)
    assert data.note == "JPEG q75 copy, 200 train / 50 test images"
    assert data.label == "cifar10 (JPEG q75 copy, 200 train / 50 test images)"
    assert data.source == str(arc.resolve())


def test_archive_and_folder_decode_alike(tmp_path, copy_dir, isolated_data_env):
    arc = make_archive(copy_dir, tmp_path / "a.tar.gz")
    a, f = load_cifar10_jpeg(arc), load_cifar10_jpeg(copy_dir)
    for k in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, k), getattr(f, k))
    assert a.note == f.note


def test_unpacked_folder_found_and_given_by_path(tmp_path, copy_dir, isolated_data_env):
    assert find_cifar10_jpeg(copy_dir.parent) == copy_dir
    check_cifar10(load_dataset("cifar10", copy_dir.parent))
    by_path = load_dataset(str(copy_dir))  # a folder path with CIFAR-10's classes gets CIFAR-10's treatment
    check_cifar10(by_path)
    assert by_path.note.startswith("JPEG q75 copy")


def test_folder_with_other_classes_is_a_plain_folder(tmp_path, isolated_data_env):
    root = make_copy(tmp_path / "c")
    (root / "train" / "truck").rename(root / "train" / "lorry")
    (root / "test" / "truck").rename(root / "test" / "lorry")
    data = load_dataset(str(root))
    assert data.name == str(root) and data.note is None and data.mean != MEAN


def test_archive_cache_reused(tmp_path, copy_dir, isolated_data_env, monkeypatch):
    from digitlab.data import cifar10_jpeg

    arc = make_archive(copy_dir, tmp_path / "a.tar.gz")
    first = load_cifar10_jpeg(arc)

    def fail(path):
        raise AssertionError("the archive was read again")

    monkeypatch.setattr(cifar10_jpeg, "_archive_listing", fail)
    again = load_cifar10_jpeg(arc)
    assert torch.equal(again.train_x, first.train_x) and again.label == first.label and again.mean == MEAN


def test_archive_member_size_capped(tmp_path, isolated_data_env):
    path = tmp_path / "big.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            blob = b"\0" * (2 << 20)  # 2 MB named like a CIFAR image
            info = tarfile.TarInfo(f"c/{split}/cat/0000.jpg")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DigitlabError, match="over the 1 MB"):
        load_cifar10_jpeg(path)


def test_archive_without_cifar_layout(tmp_path, isolated_data_env):
    path = tmp_path / "other.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DigitlabError, match="no train/<class>/ and test/<class>/"):
        load_cifar10_jpeg(path)
    path.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DigitlabError, match="corrupt or truncated"):
        load_cifar10_jpeg(path)


@pytest.mark.parametrize("quality", [50, 75, 90])
def test_jpeg_quality(quality):
    buf = io.BytesIO()
    Image.fromarray(jpeg_image(3, 0)).save(buf, "JPEG", quality=quality)
    assert jpeg_quality(Image.open(buf)) == quality
    assert jpeg_quality(Image.new("RGB", (4, 4))) is None  # not a JPEG


def test_data_info_says_jpeg_copy(tmp_path, copy_dir, isolated_data_env, capsys):
    from digitlab.cli import main

    make_archive(copy_dir, tmp_path / "data" / "cifar10-jpeg.tar.gz")
    assert main(["data", "info", "cifar10", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "cifar10 (JPEG q75 copy" in out and "crop-flip" in out
    assert "0.4914, 0.4822, 0.4465" in out


def test_official_pickles_win_over_the_copy(tmp_path, copy_dir, isolated_data_env):
    make_archive(copy_dir, tmp_path / "data" / "cifar10-jpeg" / ARCHIVE)
    tiny_cifar(tmp_path / "data")  # data/cifar-10-batches-py/
    data = load_dataset("cifar10", tmp_path / "data")
    assert data.note is None and data.label == "cifar10"  # the lossless originals: no note
    assert data.source == str(tmp_path / "data" / "cifar-10-batches-py")
