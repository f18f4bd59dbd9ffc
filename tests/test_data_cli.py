"""`digitlab data show | info | download` end to end (cli/data.py)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from conftest import tiny_cifar, tiny_mnist
from digitlab.cli import main


def test_info_digits(capsys):
    assert main(["data", "info", "digits"]) == 0
    out = capsys.readouterr().out
    assert "1,438" in out and "359" in out and "scikit-learn" in out and "none (default)" in out
    assert "epochs 10, batch size 32" in out


def test_info_mnist_shows_where(tmp_path, isolated_data_env, capsys):
    tiny_mnist(tmp_path / "mnist")
    assert main(["data", "info", "mnist", "--data-dir", str(tmp_path), "--no-download"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "mnist") in out and "0.1307" in out and "12 images" in out


def test_show_writes_png(tmp_path, isolated_data_env, capsys):
    tiny_mnist(tmp_path)
    out = tmp_path / "grid.png"
    assert main(["data", "show", "mnist", "--data-dir", str(tmp_path), "--out", str(out), "--count", "8"]) == 0
    assert Image.open(out).size[0] > 100
    assert str(out) in capsys.readouterr().out


def test_show_cifar_test_split_random(tmp_path, isolated_data_env):
    tiny_cifar(tmp_path)
    out = tmp_path / "c.png"
    args = ["--data-dir", str(tmp_path), "--out", str(out), "--split", "test", "--seed", "1"]
    rc = main(["data", "show", "cifar10", *args])
    assert rc == 0 and out.is_file()


def test_show_folder_default_name(tmp_path, monkeypatch):
    for cls in ("x", "y"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((9, 9), 50 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert main(["data", "show", "./imgs", "--count", "4"]) == 0
    assert (tmp_path / "imgs-train.png").is_file()


def test_errors_are_one_line_messages(tmp_path, isolated_data_env, capsys):
    assert main(["data", "info", "mnsit"]) == 2
    assert "unknown dataset 'mnsit'" in capsys.readouterr().err
    assert main(["data", "show", "mnist", "--data-dir", str(tmp_path), "--no-download"]) == 2
    err = capsys.readouterr().err
    assert "mnist files not found" in err and "Traceback" not in err
    assert main(["data", "show", "digits", "--split", "val"]) == 2


def test_download_command(tmp_path, isolated_data_env, capsys):
    assert main(["data", "download", "digits"]) == 0
    assert "nothing to download" in capsys.readouterr().out
    tiny_mnist(tmp_path / "mnist")
    assert main(["data", "download", "mnist", "--data-dir", str(tmp_path)]) == 0
    assert "already at" in capsys.readouterr().out


def test_skipped_images_are_one_warning_line(tmp_path, isolated_data_env, capsys):
    """An unreadable file is reported once, as `warning: ...` (not also as a Python UserWarning with its
    source line)."""
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert main(["data", "info", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped 1 unreadable image file") == 1, err
    assert err.startswith("warning: skipped 1 unreadable") and "UserWarning" not in err and "warnings.warn" not in err
