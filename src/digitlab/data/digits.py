"""scikit-learn's bundled 8x8 digits: 1,797 images that need no download.

Pixel values 0..16 are scaled to uint8 0..255; a fixed-seed 80/20 split makes train and
test the same on every machine. Handy for tests and for seconds-long experiments.
"""

from __future__ import annotations

import numpy as np
import torch

from digitlab.data.base import ImageData, channel_stats
from digitlab.errors import DigitlabError

SPLIT_SEED = 0  # fixed: the split is part of the dataset's definition
TEST_FRACTION = 0.2


def load_digits() -> ImageData:
    """The 8x8 digits as uint8 (N, 1, 8, 8): 1,438 train and 359 test images."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise DigitlabError("the digits dataset needs scikit-learn: pip install scikit-learn") from exc
    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (1797, 8, 8)
    labels = bunch.target.astype(np.int64)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_test = int(round(len(labels) * TEST_FRACTION))
    test_idx = torch.from_numpy(np.sort(perm[:n_test]))
    train_idx = torch.from_numpy(np.sort(perm[n_test:]))
    x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.from_numpy(labels)
    train_x, test_x = x[train_idx].contiguous(), x[test_idx].contiguous()
    mean, std = channel_stats(train_x)
    return ImageData(
        name="digits",
        train_x=train_x,
        train_y=y[train_idx].contiguous(),
        test_x=test_x,
        test_y=y[test_idx].contiguous(),
        classes=[str(i) for i in range(10)],
        mean=mean,
        std=std,
        source="scikit-learn (bundled)",
    )
