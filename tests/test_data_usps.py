"""USPS in the ESL text format (data/usps.py), its files, download and CLI, on tiny files the tests write."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from digitlab.cli import main
from digitlab.data import load_dataset
from digitlab.data.download import CHECKSUMS
from digitlab.data.usps import parse_usps
from digitlab.errors import DigitlabError


def usps_text(labels: list[int], seed: int = 0) -> tuple[str, np.ndarray]:
    """ESL-format lines for ``labels``, and the (N, 256) values in [-1, 1] they hold."""
    rng = np.random.default_rng(seed)
    values = np.round(rng.uniform(-1, 1, (len(labels), 256)), 4)
    values[:, 0], values[:, 1], values[:, 2] = -1.0, 1.0, 0.0  # paper, ink, half
    lines = [f"{lab:.4f} " + " ".join(f"{v:.4f}" for v in row) for lab, row in zip(labels, values, strict=True)]
    return "\n".join(lines) + "\n", values


def test_parse_maps_values_to_white_ink_on_black():
    text, values = usps_text([3, 0, 9])
    x, y = parse_usps(text)
    assert x.shape == (3, 1, 16, 16) and str(x.dtype) == "torch.uint8"
    assert y.tolist() == [3, 0, 9]
    flat = x.view(3, -1).numpy()
    assert flat[:, 0].tolist() == [0, 0, 0] and flat[:, 1].tolist() == [255, 255, 255]
    assert flat[:, 2].tolist() == [128, 128, 128]
    assert np.abs(flat.astype(np.float64) - (values + 1) * 127.5).max() <= 0.5  # row by row, every value


@pytest.mark.parametrize(
    "text, message",
    [
        ("3.0 " + "0 " * 255 + "\n", "256"),
        ("12.0 " + "0 " * 256 + "\n", "labels"),
        ("2.5 " + "0 " * 256 + "\n", "labels"),
        ("1.0 " + "0 " * 255 + "3.0\n", "[-1, 1]"),
        ("1.0 " + "0 " * 255 + "x\n", "line 1"),
        ("\n\n", "no digits"),
    ],
)
def test_parse_refuses_bad_files(text, message):
    with pytest.raises(DigitlabError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_usps(text)


def test_load_gz_train_without_test(tmp_path, isolated_data_env):
    text, _ = usps_text([1, 2, 3, 4])
    (tmp_path / "usps").mkdir()
    (tmp_path / "usps" / "zip.train.gz").write_bytes(gzip.compress(text.encode()))
    data = load_dataset("usps", tmp_path, download=False)
    assert data.name == "usps" and data.train_x.shape == (4, 1, 16, 16) and data.test_x.shape[0] == 0
    assert data.train_y.tolist() == [1, 2, 3, 4] and data.image_size == 16 and data.num_classes == 10
    assert data.source == str(tmp_path / "usps")


def test_load_plain_train_and_test(tmp_path, isolated_data_env):
    (tmp_path / "zip.train").write_text(usps_text([5, 6])[0])
    (tmp_path / "zip.test").write_text(usps_text([7], seed=1)[0])
    data = load_dataset("usps", tmp_path, download=False)
    assert data.train_y.tolist() == [5, 6] and data.test_y.tolist() == [7]


def test_missing_files_say_where(tmp_path, isolated_data_env):
    with pytest.raises(DigitlabError, match="zip.train.gz"):
        load_dataset("usps", tmp_path, download=False)


def test_truncated_gzip_is_an_error(tmp_path, isolated_data_env):
    blob = gzip.compress(usps_text([1, 2])[0].encode())
    (tmp_path / "zip.train.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DigitlabError, match="truncated"):
        load_dataset("usps", tmp_path, download=False)


def test_official_checksum_is_the_readme_md5():
    assert "206835541ea704bcfb4b6eea872678bf" in CHECKSUMS["usps"]["zip.train.gz"]


def test_download_from_a_mirror_checked_and_atomic(tmp_path, isolated_data_env):
    from digitlab.data.download import download_dataset

    blob = gzip.compress(usps_text([8, 9])[0].encode())
    www = tmp_path / "www"
    www.mkdir()
    (www / "zip.train.gz").write_bytes(blob)
    good = {"zip.train.gz": hashlib.md5(blob).hexdigest()}
    dest = tmp_path / "dl"
    with pytest.raises(DigitlabError, match="checksum mismatch"):
        download_dataset(
            "usps", dest, mirrors=[www.as_uri() + "/"], checksums={"zip.train.gz": "0" * 32}, progress=False
        )
    assert not any(dest.iterdir())  # nothing half-written or unverified is left behind
    download_dataset("usps", dest, mirrors=[www.as_uri() + "/"], checksums=good, progress=False)
    assert load_dataset("usps", dest, download=False).train_y.tolist() == [8, 9]


def test_cli_info_and_show(tmp_path, isolated_data_env, capsys):
    (tmp_path / "zip.train").write_text(usps_text([0, 1, 2])[0])
    assert main(["data", "info", "usps", "--data-dir", str(tmp_path), "--no-download"]) == 0
    out = capsys.readouterr().out
    assert "3 images" in out and "16 x 16" in out
    png = tmp_path / "u.png"
    assert main(["data", "show", "usps", "--data-dir", str(tmp_path), "--out", str(png), "--no-download"]) == 0
    assert png.stat().st_size > 0
    assert main(["data", "show", "usps", "--data-dir", str(tmp_path), "--split", "test", "--no-download"]) == 2
