"""USPS handwritten digits in the text format of The Elements of Statistical Learning.

Each line of ``zip.train.gz`` / ``zip.test.gz`` is a label written as a float followed by
256 grey values in [-1, 1], a 16x16 image row by row; -1 is paper, 1 is ink. They become
uint8 white ink on black, MNIST's polarity: (v + 1) / 2 * 255. The digits come from envelopes
scanned by the US Postal Service, deslanted and size-normalised to fill the 16x16 frame:
real handwriting from another source than MNIST, which makes the set a measure of how a
digit model reads other people's writing (``digitlab eval --dataset usps --split train``).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from digitlab.data.base import ImageData
from digitlab.data.locate import TEXT_FILES, find_or_download_text_files
from digitlab.data.textfile import digit_set, read_text
from digitlab.errors import DigitlabError

SIDE = 16
TRAIN_FILE = TEXT_FILES["usps"][0]
TEST_FILE = "zip.test"  # optional: used when present (the official site serves it beside train)
CLASSES = [str(i) for i in range(10)]


def parse_usps(text: str, source: str = "usps") -> tuple[torch.Tensor, torch.Tensor]:
    """ESL-format lines -> uint8 images (N, 1, 16, 16), white ink on black, and int64 labels (N,)."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = np.array(line.split(), dtype=np.float32)
        except ValueError as exc:
            raise DigitlabError(f"{source}, line {number}: not a row of numbers ({exc})") from exc
        if values.size != 1 + SIDE * SIDE:
            raise DigitlabError(f"{source}, line {number}: {values.size} values, expected a label and {SIDE * SIDE}")
        rows.append(values)
    if not rows:
        raise DigitlabError(f"{source}: no digits in the file")
    table = np.stack(rows)
    labels, pixels = table[:, 0], table[:, 1:]
    if not np.all(np.isfinite(table)) or np.any(np.abs(pixels) > 1.0 + 1e-3):
        raise DigitlabError(f"{source}: pixel values must be finite and in [-1, 1]")
    if np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() > 9:
        raise DigitlabError(f"{source}: labels must be whole numbers 0..9")
    images = np.round((np.clip(pixels, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    x = torch.from_numpy(images.reshape(-1, 1, SIDE, SIDE))
    return x, torch.from_numpy(labels.astype(np.int64))


def load_usps(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    mirrors: list[str] | None = None,
) -> ImageData:
    """USPS as uint8 tensors: ``zip.train`` as train, ``zip.test`` as test when present (else none)."""
    files = find_or_download_text_files(
        "usps", [TRAIN_FILE], [TEST_FILE], data_dir, download=download, progress=progress, mirrors=mirrors
    )
    train = parse_usps(read_text(files[TRAIN_FILE]), str(files[TRAIN_FILE]))
    test = parse_usps(read_text(files[TEST_FILE]), str(files[TEST_FILE])) if TEST_FILE in files else None
    return digit_set("usps", train, test or (train[0][:0], train[1][:0]), files[TRAIN_FILE].parent)
