"""naming.py: the one rule for a dataset's name in reports (training, eval.json, the predictor's info)."""

from __future__ import annotations

import torch

from digitlab.data.base import ImageData
from digitlab.naming import dataset_label


def test_a_copy_is_named_with_its_note_and_anything_else_as_it_is():
    assert dataset_label("cifar10", "JPEG q75 copy") == "cifar10 (JPEG q75 copy)"
    assert dataset_label("mnist", None) == "mnist" and dataset_label("mnist", "") == "mnist"
    assert dataset_label(None, "JPEG q75 copy") is None  # no name: nothing to annotate
    assert dataset_label("x", 3) == "x"  # type: ignore[arg-type]  # a malformed note from a checkpoint is left out


def test_image_data_uses_the_same_rule():
    empty = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    data = ImageData(
        "cifar10", empty, torch.zeros(0), empty, torch.zeros(0), ["a"], (0.5,), (0.5,), note="JPEG q75 copy"
    )
    assert data.label == dataset_label("cifar10", "JPEG q75 copy")
