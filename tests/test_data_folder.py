"""Image folders and the bundled digits (data/folder.py, data/digits.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digitlab.data import load_dataset
from digitlab.data.folder import load_folder
from digitlab.errors import DigitlabError


def save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def gray_folder(root: Path, classes=("cat", "dog"), per_class: int = 5, size: int = 20) -> Path:
    for ci, name in enumerate(classes):
        for i in range(per_class):
            save(root / name / f"{i:02d}.png", np.full((size, size), 40 * ci + i, np.uint8))
    return root


def test_split_80_20_and_class_names(tmp_path):
    root = gray_folder(tmp_path / "f", classes=("b", "a"), per_class=10)
    data = load_dataset(str(root))
    assert data.classes == ["a", "b"]  # sorted folder names
    assert data.train_x.shape == (16, 1, 28, 28) and data.test_x.shape == (4, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert torch.bincount(data.test_y).tolist() == [2, 2]  # per class
    assert data.skipped == [] and data.source == str(root.resolve())
    again = load_folder(root)
    assert torch.equal(again.test_x, data.test_x)  # deterministic split
    # "a" images have value 40*1+i, "b" 0+i (they were listed as ("b", "a"))
    assert int(data.train_x[data.train_y == 0].min()) >= 40


def test_stats_from_train(tmp_path):
    data = load_folder(gray_folder(tmp_path, per_class=4))
    x = data.train_x.double() / 255
    assert data.mean[0] == pytest.approx(x.mean().item(), abs=1e-4)
    assert data.std[0] == pytest.approx(x.std(unbiased=False).item(), abs=1e-4)


def test_train_test_subfolders(tmp_path):
    gray_folder(tmp_path / "train", per_class=3)
    gray_folder(tmp_path / "test", classes=("dog",), per_class=2)
    data = load_folder(tmp_path)
    assert data.classes == ["cat", "dog"]
    assert data.train_x.shape[0] == 6 and data.test_x.shape[0] == 2
    assert data.test_y.tolist() == [1, 1]


def test_test_class_not_in_train(tmp_path):
    gray_folder(tmp_path / "train", per_class=2)
    gray_folder(tmp_path / "test", classes=("cow",), per_class=1)
    with pytest.raises(DigitlabError, match="'cow' is in test/ but not in train/"):
        load_folder(tmp_path)


def test_rgb_detection_and_default_size(tmp_path):
    gray_folder(tmp_path, per_class=3)
    save(tmp_path / "cat" / "color.jpg", (np.zeros((40, 30, 3)) + [200, 10, 10]).astype(np.uint8))
    data = load_folder(tmp_path)
    assert data.train_x.shape[1:] == (3, 32, 32) and len(data.mean) == 3
    assert load_folder(tmp_path, grayscale=True).train_x.shape[1:] == (1, 28, 28)
    assert load_folder(tmp_path, grayscale=True, image_size=16).train_x.shape[1:] == (1, 16, 16)


def test_gray_modes(tmp_path):
    save(tmp_path / "a" / "bw.png", (np.eye(12) > 0), mode="1")
    save(tmp_path / "a" / "sixteen.png", np.full((12, 12), 65535, np.uint16))  # I;16
    pal = Image.fromarray(np.full((12, 12), 100, np.uint8)).convert("P")
    pal.save(tmp_path / "a" / "pal.gif")
    save(tmp_path / "b" / "la.png", np.dstack([np.zeros((12, 12), np.uint8), np.full((12, 12), 255, np.uint8)]), "LA")
    save(tmp_path / "b" / "gray.bmp", np.full((12, 12), 7, np.uint8))
    data = load_folder(tmp_path, image_size=12)
    assert data.channels == 1
    x = torch.cat([data.train_x, data.test_x])
    assert int(x.max()) == 255  # the 16-bit white is scaled, not wrapped


def test_transparent_background_becomes_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)  # fully transparent black: paper
    rgba[4:6, :, 3] = 255  # an opaque black stroke
    for cls in ("a", "b"):
        for i in range(2):
            save(tmp_path / cls / f"{i}.png", rgba, "RGBA")
    data = load_folder(tmp_path, grayscale=True, image_size=10)
    img = data.train_x[0, 0]
    assert int(img[0, 0]) == 255 and int(img[5, 5]) == 0


def test_corrupt_file_is_skipped_with_warning(tmp_path):
    gray_folder(tmp_path, per_class=3)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (tmp_path / "dog" / "notes.txt").write_text("not an image, ignored silently")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file.*broken\.png"):
        data = load_folder(tmp_path)
    assert len(data.skipped) == 1 and "broken.png" in data.skipped[0]
    assert data.train_x.shape[0] + data.test_x.shape[0] == 6


def test_truncated_jpeg_with_valid_header_is_skipped(tmp_path):
    gray_folder(tmp_path, per_class=3)
    p = save(tmp_path / "cat" / "cut.jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    p.write_bytes(p.read_bytes()[:300])
    with pytest.warns(UserWarning, match="cut.jpg"):
        data = load_folder(tmp_path, grayscale=True)
    assert len(data.skipped) == 1


def test_empty_and_bad_folders(tmp_path):
    with pytest.raises(DigitlabError, match="does not exist"):
        load_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DigitlabError, match="no class folders"):
        load_folder(tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    save(tmp_path / "flat" / "x.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DigitlabError, match="no class folders"):
        load_folder(tmp_path / "flat")
    gray_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DigitlabError, match="at least two"):
        load_folder(tmp_path / "one")
    gray_folder(tmp_path / "tiny", per_class=1)
    with pytest.raises(DigitlabError, match="at least two images"):
        load_folder(tmp_path / "tiny")


def test_all_unreadable(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(DigitlabError, match="no readable images"):
        load_folder(tmp_path)


def test_path_that_is_not_a_folder(tmp_path):
    with pytest.raises(DigitlabError, match="does not exist"):
        load_dataset(str(tmp_path / "missing-folder"))


# --- digits -----------------------------------------------------------------------------


def test_digits():
    data = load_dataset("digits")
    assert data.train_x.shape == (1438, 1, 8, 8) and data.test_x.shape == (359, 1, 8, 8)
    assert data.train_x.dtype == torch.uint8 and int(data.train_x.max()) == 255
    assert data.classes == [str(i) for i in range(10)]
    assert set(data.test_y.tolist()) == set(range(10))
    assert 0.1 < data.mean[0] < 0.5 and data.std[0] > 0.1
    assert torch.equal(load_dataset("digits").test_x, data.test_x)  # fixed split
    big = load_dataset("digits", image_size=28)
    assert big.train_x.shape == (1438, 1, 28, 28) and big.train_x.dtype == torch.uint8
