"""How a dataset is named in reports: one rule for training, evaluation and the predictor (torch-free)."""

from __future__ import annotations


def dataset_label(name: str | None, note: str | None) -> str | None:
    """``cifar10 (JPEG q75 copy)`` for a copy with a note, else the name as it is."""
    return f"{name} ({note})" if name and isinstance(note, str) and note else name
