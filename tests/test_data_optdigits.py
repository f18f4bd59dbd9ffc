"""optdigits-orig bitmaps (data/optdigits.py) and the .Z decoder (data/textfile.py), on files the tests write."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess

import numpy as np
import pytest

from digitlab.cli import main
from digitlab.data import load_dataset
from digitlab.data.download import CHECKSUMS, checksum_ok
from digitlab.data.optdigits import parse_optdigits
from digitlab.data.textfile import unlzw
from digitlab.errors import DigitlabError

HEADER = "BU handwritten digit database\nTraining file\n\nentwidth = 32\nentheight = 32\nntot = {n}\n"


def bitmaps(labels: list[int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, (len(labels), 32, 32)).astype(np.uint8)


def opt_text(labels: list[int], seed: int = 0) -> tuple[str, np.ndarray]:
    bits = bitmaps(labels, seed)
    body = "".join(
        "".join("".join(map(str, row)) + "\n" for row in b) + f" {lab}\n" for b, lab in zip(bits, labels, strict=True)
    )
    return HEADER.format(n=len(labels)) + body, bits


def compress_lzw(data: bytes, maxbits: int = 16) -> bytes:
    """Unix compress's block-mode LZW written plainly (a clear code when the table fills); gzip -d reads it."""
    acc = pos = group = 0
    bits = 9

    def emit(code: int) -> None:
        nonlocal acc, pos
        acc |= code << pos
        pos += bits

    def pad() -> None:  # the rest of the group of eight codes is padding
        nonlocal pos, group
        span = 8 * bits
        pos = group = group + -(-(pos - group) // span) * span

    table = {bytes([i]): i for i in range(256)}
    free, w = 257, b""
    for b in data:
        wc = w + bytes([b])
        if wc in table:
            w = wc
            continue
        emit(table[w])
        if free > (1 << bits) - 1 and bits < maxbits:
            pad()
            bits += 1
        if free < 1 << maxbits:
            table[wc], free = free, free + 1
        else:
            emit(256)
            pad()
            bits, free, table = 9, 257, {bytes([i]): i for i in range(256)}
        w = bytes([b])
    if w:
        emit(table[w])
    return b"\x1f\x9d" + bytes([0x80 | maxbits]) + acc.to_bytes((pos + 7) // 8, "little")


def test_parse_bitmaps_and_labels():
    text, bits = opt_text([4, 0, 9])
    x, y = parse_optdigits(text)
    assert x.shape == (3, 1, 32, 32) and y.tolist() == [4, 0, 9]
    assert np.array_equal(x[:, 0].numpy(), bits * 255)  # 1 is ink: white on black


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t[: t.rindex(" 9")], "truncated"),
        (lambda t: t.replace(" 0\n", " x\n"), "label"),
        (lambda t: t.replace(" 0\n", " 12\n"), "label"),
        (lambda t: HEADER, "no 32x32"),
    ],
)
def test_parse_refuses_bad_files(edit, message):
    text, _ = opt_text([4, 0, 9])
    with pytest.raises(DigitlabError, match=message):
        parse_optdigits(edit(text))


def test_bad_bitmap_row_names_its_line():
    text, _ = opt_text([4, 0])
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if len(line) == 32)
    lines[first + 40] = "2" * 32  # a row of the second digit
    with pytest.raises(DigitlabError, match=f"line {first + 41}"):
        parse_optdigits("\n".join(lines) + "\n")


@pytest.mark.parametrize("suffix", ["", ".gz", ".Z"])
def test_load_each_compression(tmp_path, isolated_data_env, suffix):
    folder = tmp_path / "optdigits"
    folder.mkdir()
    for name, labels in (("optdigits-orig.tra", [1, 2, 3]), ("optdigits-orig.cv", [7, 8])):
        raw = opt_text(labels)[0].encode()
        blob = {"": raw, ".gz": gzip.compress(raw), ".Z": compress_lzw(raw)}[suffix]
        (folder / (name + suffix)).write_bytes(blob)
    data = load_dataset("optdigits", tmp_path, download=False)
    assert data.train_y.tolist() == [1, 2, 3] and data.test_y.tolist() == [7, 8]
    assert data.image_size == 32 and data.channels == 1 and data.source == str(folder)


def test_missing_cv_is_reported(tmp_path, isolated_data_env):
    (tmp_path / "optdigits-orig.tra").write_text(opt_text([1])[0])
    with pytest.raises(DigitlabError, match="optdigits-orig.cv"):
        load_dataset("optdigits", tmp_path, download=False)


@pytest.mark.parametrize("size, maxbits", [(0, 16), (40, 16), (6000, 12), (120_000, 10), (200_000, 16)])
def test_unlzw_round_trip(size, maxbits):
    data = os.urandom(size // 2).hex().encode()  # hex digits: long enough streams to grow codes and clear
    assert unlzw(compress_lzw(data, maxbits)) == data


@pytest.mark.skipif(not shutil.which("compress"), reason="ncompress's compress is not installed")
def test_unlzw_reads_real_compress_output(tmp_path):
    data = opt_text(list(range(10)) * 30)[0].encode()
    z = subprocess.run(["compress", "-c"], input=data, capture_output=True, check=True).stdout
    assert unlzw(z) == data


def test_unlzw_refuses_bad_streams():
    with pytest.raises(DigitlabError, match="not a compress"):
        unlzw(b"\x1f\x8bxx")
    with pytest.raises(DigitlabError, match="code size"):
        unlzw(b"\x1f\x9d\x80")
    with pytest.raises(DigitlabError, match="not defined"):
        unlzw(b"\x1f\x9d\x90" + (300).to_bytes(2, "little"))  # a first code past the table


def test_checksums_accept_the_text_inside_a_z_file(tmp_path):
    text = opt_text([5])[0].encode()
    z = tmp_path / ".download.part"  # a download is checked under its temporary name
    z.write_bytes(compress_lzw(text))
    import hashlib

    assert checksum_ok(z, hashlib.md5(text).hexdigest())
    assert not checksum_ok(z, "0" * 32)
    # the official files: the md5s of their text and of the README's .gz copies
    assert "64720d5b8231d1ec3af11e895456073c" in CHECKSUMS["optdigits"]["optdigits-orig.tra.Z"]
    assert "55ce8078238674a5db5059a70fc3f562" in CHECKSUMS["optdigits"]["optdigits-orig.cv.Z"]


def test_cli_info(tmp_path, isolated_data_env, capsys):
    (tmp_path / "optdigits-orig.tra").write_text(opt_text([1, 2])[0])
    (tmp_path / "optdigits-orig.cv").write_text(opt_text([3])[0])
    assert main(["data", "info", "optdigits", "--data-dir", str(tmp_path), "--no-download"]) == 0
    out = capsys.readouterr().out
    assert "2 images" in out and "1 images" in out and "32 x 32" in out
    assert main(["data", "download", "optdigits", "--data-dir", str(tmp_path)]) == 0
    assert "already at" in capsys.readouterr().out
