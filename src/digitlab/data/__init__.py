"""Datasets as in-memory uint8 tensors: ``load_dataset(name)`` and ``list_datasets()``.

``name`` is ``mnist``, ``fashion-mnist``, ``cifar10``, ``digits``, ``usps``, ``optdigits``, or a path to an image
folder. A registered name wins over a folder of the same name; write ``./mnist`` for the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from digitlab.data.base import ImageData, channel_stats
from digitlab.errors import DigitlabError, unknown_name

DATASETS = {
    "mnist": "MNIST handwritten digits, 28x28 gray, 60k/10k",
    "fashion-mnist": "Zalando clothing images, 28x28 gray, 60k/10k",
    "cifar10": "CIFAR-10 photos, 32x32 RGB, 10 classes, 50k/10k",
    "digits": "scikit-learn's bundled 8x8 digits, 1438/359, no download",
    "usps": "USPS envelope digits, 16x16 gray, 7291/2007 (test when zip.test is present); for evaluation",
    "optdigits": "UCI optdigits-orig, 32x32 binary bitmaps from 30+ writers, 1934/946; for evaluation",
}
ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
}
# The weights that turn RGB into gray (ITU-R 601, what PIL's convert("L") uses).
LUMA = (0.299, 0.587, 0.114)


def list_datasets() -> list[str]:
    """Registered dataset names (any image folder path is accepted too)."""
    return sorted(DATASETS)


def canonical_name(name: str) -> str | None:
    """The registered name for ``name`` (case and aliases forgiven), or None."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in DATASETS else None


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.startswith((".", "~")) or Path(name).expanduser().exists()


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    grayscale: bool | None = None,
    image_size: int | None = None,
    val_fraction: float = 0.0,
    progress: bool = True,
) -> ImageData:
    """Load a dataset into memory as uint8 tensors.

    Args:
        name: ``mnist``, ``fashion-mnist``, ``cifar10``, ``digits``, ``usps``, ``optdigits``, or a path to an
            image folder.
        data_dir: where to look for (and download) files; None: ``$DIGITLAB_DATA``, then the cache.
        download: fetch missing files from the official mirrors.
        grayscale: None keeps the dataset's channels; True/False converts to gray/RGB.
        image_size: None keeps the size (folders: 28 gray, 32 RGB); otherwise resize to this square.
        val_fraction: >0 holds out this part of train as the evaluation set (test set dropped).
        progress: show download/decoding progress bars.

    Raises DigitlabError for an unknown name, missing or corrupt files.
    """
    canon = canonical_name(name)
    if canon is None:
        if not _looks_like_path(name):
            err = unknown_name("dataset", name, list_datasets())
            raise DigitlabError(f"{err}, or a path to an image folder")
        from digitlab.data.cifar10_jpeg import as_cifar10, is_cifar10_folder, load_cifar10_jpeg, looks_like_cifar10
        from digitlab.data.folder import load_folder

        folder = Path(name).expanduser()
        if is_cifar10_folder(folder) and grayscale is None and image_size is None:  # a CIFAR-10 copy, given by path
            data = load_cifar10_jpeg(folder, progress=progress)
        else:
            data = load_folder(name, grayscale=grayscale, image_size=image_size, progress=progress)
            if looks_like_cifar10(data):  # CIFAR-10's classes without train/ and test/: still CIFAR-10
                data = as_cifar10(data, folder)
    else:
        data = _load_registered(canon, data_dir, download, progress)
        data = convert(data, grayscale=grayscale, image_size=image_size)
    if val_fraction:
        try:
            data = data.split_validation(val_fraction)
        except ValueError as exc:
            raise DigitlabError(str(exc)) from exc
    return data


def _load_registered(name: str, data_dir, download: bool, progress: bool) -> ImageData:
    if name in ("mnist", "fashion-mnist"):
        from digitlab.data.mnist import load_mnist

        return load_mnist(name, data_dir, download=download, progress=progress)
    if name == "cifar10":
        from digitlab.data.cifar10 import load_cifar10

        return load_cifar10(data_dir, download=download, progress=progress)
    if name == "usps":
        from digitlab.data.usps import load_usps

        return load_usps(data_dir, download=download, progress=progress)
    if name == "optdigits":
        from digitlab.data.optdigits import load_optdigits

        return load_optdigits(data_dir, download=download, progress=progress)
    from digitlab.data.digits import load_digits

    return load_digits()


def _convert_images(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    if x.shape[1] != channels:
        if channels == 1:
            w = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
        else:
            x = x.expand(-1, channels, -1, -1)
    if x.shape[-1] != size or x.shape[-2] != size:
        xf = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = xf.round_().clamp_(0, 255).to(torch.uint8)
    return x.contiguous()


def convert(data: ImageData, *, grayscale: bool | None = None, image_size: int | None = None) -> ImageData:
    """Change channels (gray <-> RGB) and/or size; statistics are recomputed when anything changes."""
    from dataclasses import replace

    channels = data.channels if grayscale is None else (1 if grayscale else 3)
    size = data.image_size if image_size is None else int(image_size)
    if size < 1:
        raise DigitlabError(f"image size must be positive, got {size}")
    if channels == data.channels and size == data.image_size and data.train_x.shape[-2] == size:
        return data
    train_x = _convert_images(data.train_x, channels, size)
    test_x = _convert_images(data.test_x, channels, size)
    mean, std = channel_stats(train_x)
    return replace(data, train_x=train_x, test_x=test_x, mean=mean, std=std)


__all__ = ["DATASETS", "ImageData", "canonical_name", "convert", "list_datasets", "load_dataset"]
