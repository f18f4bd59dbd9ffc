"""UCI's optdigits-orig: 32x32 binary bitmaps of digits written on NIST forms.

After its ``key = value`` header, a file holds for each digit 32 lines of 32 ``0``/``1``
characters (1 is ink) and a line with the label. The bitmaps become uint8 white ink on black
(1 -> 255), MNIST's polarity. The digits are thick and fill the frame edge to edge, the hard
case for a reader trained on MNIST's thin, centred digits; a measure of how a digit model reads
other people's writing (``digitlab eval CHECKPOINT --dataset optdigits``).

Splits: ``optdigits-orig.tra`` (1,934 digits, 30 writers) is train and ``optdigits-orig.cv``
(946) is test, the two parts UCI distributes for training and model selection.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from digitlab.data.base import ImageData
from digitlab.data.locate import find_or_download_text_files
from digitlab.data.textfile import digit_set, read_text
from digitlab.errors import DigitlabError

SIDE = 32
TRAIN_FILE = "optdigits-orig.tra"
TEST_FILE = "optdigits-orig.cv"
CLASSES = [str(i) for i in range(10)]


def _is_bitmap_row(line: str) -> bool:
    return len(line) == SIDE and not line.strip("01")


def parse_optdigits(text: str, source: str = "optdigits") -> tuple[torch.Tensor, torch.Tensor]:
    """An optdigits-orig file -> uint8 images (N, 1, 32, 32), white ink on black, and labels (N,)."""
    lines = [line.strip() for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines) if _is_bitmap_row(line)), None)
    if start is None:
        raise DigitlabError(f"{source}: no 32x32 bitmaps found")
    body = [(i + 1, line) for i, line in enumerate(lines[start:], start) if line]
    if len(body) % (SIDE + 1):
        raise DigitlabError(
            f"{source}: {len(body)} lines after the header, not a whole number of digits "
            f"({SIDE} bitmap rows and a label each); the file may be truncated"
        )
    images, labels = [], []
    for k in range(0, len(body), SIDE + 1):
        rows, (number, label) = body[k : k + SIDE], body[k + SIDE]
        bad = next((n for n, row in rows if not _is_bitmap_row(row)), None)
        if bad is not None:
            raise DigitlabError(f"{source}, line {bad}: expected {SIDE} characters of 0 and 1")
        if not (label.isdigit() and len(label) == 1):
            raise DigitlabError(f"{source}, line {number}: expected a label 0..9, found {label[:20]!r}")
        images.append("".join(row for _, row in rows))
        labels.append(int(label))
    bits = np.frombuffer("".join(images).encode("ascii"), dtype=np.uint8) - ord("0")
    x = torch.from_numpy((bits * 255).astype(np.uint8).reshape(-1, 1, SIDE, SIDE))
    return x, torch.tensor(labels, dtype=torch.int64)


def load_optdigits(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    mirrors: list[str] | None = None,
) -> ImageData:
    """optdigits-orig as uint8 tensors: ``tra`` as train, ``cv`` as test."""
    files = find_or_download_text_files(
        "optdigits", [TRAIN_FILE, TEST_FILE], [], data_dir, download=download, progress=progress, mirrors=mirrors
    )
    train = parse_optdigits(read_text(files[TRAIN_FILE]), str(files[TRAIN_FILE]))
    test = parse_optdigits(read_text(files[TEST_FILE]), str(files[TEST_FILE]))
    return digit_set("optdigits", train, test, files[TRAIN_FILE].parent)
