"""The in-memory dataset every loader returns: uint8 tensors plus what a model needs to know."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from digitlab.naming import dataset_label

# Deflate inflates at most 1032-fold: a .gz of n bytes cannot hold more than this times n, so a
# small compressed file that declares a large content is truncated before anything is allocated for it.
MAX_DEFLATE_RATIO = 1032


@dataclass
class ImageData:
    """A whole dataset as tensors.

    Images stay uint8 (N, C, H, W) so MNIST is 55 MB and CIFAR-10 184 MB; normalisation
    happens per batch on the training device (see ``data.loader``).
    """

    name: str
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor  # uint8 (M, C, H, W)
    test_y: torch.Tensor  # int64 (M,)
    classes: list[str]
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    source: str | None = None  # where the files were found (shown by `digitlab data info`)
    skipped: list[str] = field(default_factory=list)  # image folders: unreadable files left out
    # How these files differ from the official release ("JPEG q75 copy"): said wherever results are reported.
    note: str | None = None

    @property
    def label(self) -> str:
        """The name to report: ``cifar10 (JPEG q75 copy)`` for a copy, else the name."""
        return dataset_label(self.name, self.note) or self.name

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device: torch.device | str) -> ImageData:
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )

    def subset(self, train: int | None = None, test: int | None = None) -> ImageData:
        """First ``train``/``test`` samples; for dry runs and quick tests."""
        return replace(
            self,
            train_x=self.train_x[:train],
            train_y=self.train_y[:train],
            test_x=self.test_x[:test],
            test_y=self.test_y[:test],
        )

    def split_validation(self, fraction: float, seed: int = 0) -> ImageData:
        """Hold out ``fraction`` of the training set as the evaluation set (the test set is dropped)."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
        n = self.train_x.shape[0]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(self.train_x.device)
        k = int(round(n * fraction))
        val, tr = perm[:k], perm[k:]
        return replace(
            self,
            train_x=self.train_x[tr],
            train_y=self.train_y[tr],
            test_x=self.train_x[val],
            test_y=self.train_y[val],
        )


def channel_stats(x: torch.Tensor, chunk: int = 8192) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) on the [0, 1] scale.

    Chunked float64 sums, so a large uint8 set never needs a full float copy.
    """
    if x.shape[0] == 0:
        raise ValueError("cannot compute statistics of an empty image set")
    c = x.shape[1]
    s1 = torch.zeros(c, dtype=torch.float64, device=x.device)
    s2 = torch.zeros(c, dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], chunk):
        xb = x[i : i + chunk].to(torch.float64).div_(255.0)
        s1 += xb.sum(dim=(0, 2, 3))
        s2 += xb.square_().sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s1 / count
    std = (s2 / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)  # a blank set must not divide by 0
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)
