"""Image folders and the bundled digits (data/folder.py, data/digits.py)."""

from __future__ import annotations

import os
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


# --- the decode cache -------------------------------------------------------------------


def many_folder(root: Path, per_class: int = 150) -> Path:
    """Two classes of small distinct gray images: enough (300) to be cached by default."""
    for ci, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            save(root / name / f"{i:03d}.png", np.full((8, 8), ci * 100 + i, np.uint8))
    return root


def count_decodes(monkeypatch) -> list[int]:
    """Count calls of the decoding step (a cache hit makes none)."""
    from digitlab.data import folder

    calls: list[int] = []
    real = folder.decode_listing

    def spy(listing, **kw):
        calls.append(len(listing.sources))
        return real(listing, **kw)

    monkeypatch.setattr(folder, "decode_listing", spy)
    return calls


def cache_files(cache: Path) -> list[Path]:
    return sorted((cache / "images").glob("*.cache"))


def same(a, b) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("train_x", "train_y", "test_x", "test_y"))


def test_cache_reused(tmp_path, isolated_data_env, monkeypatch):
    root = many_folder(tmp_path / "f")
    calls = count_decodes(monkeypatch)
    first = load_folder(root)
    assert calls == [300] and len(cache_files(isolated_data_env)) == 1
    again = load_folder(root)
    assert calls == [300]  # read from the cache, not decoded
    assert same(first, again) and again.classes == ["cat", "dog"]
    assert again.mean == first.mean and again.std == first.std
    assert again.name == str(root) and again.source == str(root.resolve())


def test_cache_rebuilt_when_a_file_changes(tmp_path, isolated_data_env, monkeypatch):
    root = many_folder(tmp_path / "f")
    calls = count_decodes(monkeypatch)
    before = load_folder(root)
    changed = root / "cat" / "007.png"
    save(changed, np.full((8, 8), 252, np.uint8))  # no other image is this bright
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))  # a new mtime for sure
    after = load_folder(root)
    assert len(calls) == 2 and not same(before, after)
    assert int(torch.cat([after.train_x, after.test_x]).max()) == 252
    save(root / "dog" / "new.png", np.zeros((8, 8), np.uint8))  # an added file
    assert len(load_folder(root).train_y) + len(load_folder(root).test_y) == 301
    assert len(calls) == 3  # the added file decoded once; the second load above came from the cache
    assert len(cache_files(isolated_data_env)) == 1  # the folder's cache is replaced, not added to


def test_corrupt_cache_rejected_and_rebuilt(tmp_path, isolated_data_env, monkeypatch, caplog):
    root = many_folder(tmp_path / "f")
    calls = count_decodes(monkeypatch)
    first = load_folder(root)
    (path,) = cache_files(isolated_data_env)
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0xFF  # one flipped pixel byte: the checksum catches it
    path.write_bytes(bytes(blob))
    assert same(load_folder(root), first) and len(calls) == 2
    assert "damaged image cache" in caplog.text
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    assert same(load_folder(root), first) and len(calls) == 3
    path.write_bytes(b"not a cache at all")
    assert same(load_folder(root), first) and len(calls) == 4
    assert same(load_folder(root), first) and len(calls) == 4  # the rebuilt cache is whole again


def test_cache_keyed_by_settings(tmp_path, isolated_data_env, monkeypatch):
    root = many_folder(tmp_path / "f")
    calls = count_decodes(monkeypatch)
    assert load_folder(root, image_size=16).train_x.shape[-1] == 16
    assert load_folder(root, image_size=12).train_x.shape[-1] == 12
    assert load_folder(root, grayscale=False, image_size=12).train_x.shape[1] == 3
    assert len(calls) == 3 and len(cache_files(isolated_data_env)) == 3


def test_unwritable_cache_still_loads(tmp_path, isolated_data_env, monkeypatch):
    """Neither the cache dir nor the data's folder writable (a shared read-only dataset): no cache, no error."""
    from digitlab.data import imagecache

    root = many_folder(tmp_path / "f")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(imagecache, "candidates", lambda source, settings: [blocker / "x.cache", blocker / "y.cache"])
    calls = count_decodes(monkeypatch)
    assert same(load_folder(root), load_folder(root))
    assert len(calls) == 2


def test_small_folders_not_cached_unless_asked(tmp_path, isolated_data_env):
    root = gray_folder(tmp_path / "f", per_class=5)
    load_folder(root)
    assert cache_files(isolated_data_env) == []
    load_folder(root, cache=True)
    assert len(cache_files(isolated_data_env)) == 1


def test_skipped_files_reported_from_the_cache_too(tmp_path, isolated_data_env):
    root = many_folder(tmp_path / "f")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    for _ in range(2):
        with pytest.warns(UserWarning, match=r"skipped 1 unreadable.*broken\.png"):
            data = load_folder(root)
        assert len(data.skipped) == 1 and len(data.train_y) + len(data.test_y) == 300


def test_process_pool_decodes_like_one_process(tmp_path, monkeypatch):
    from digitlab.data import decode

    root = many_folder(tmp_path / "f", per_class=40)
    (root / "cat" / "broken.png").write_bytes(b"nope")
    sources = sorted(root.rglob("*.png"))
    monkeypatch.setattr(decode, "POOL_MIN", 8)  # 81 files: a pool of 2 processes
    x1, e1 = decode.decode_all(sources, True, 8, workers=1, progress=False)
    x2, e2 = decode.decode_all(sources, True, 8, workers=2, progress=False)
    assert np.array_equal(x1, x2) and e1 == e2
    assert x1.shape == (80, 1, 8, 8) and sum(e is not None for e in e1) == 1
