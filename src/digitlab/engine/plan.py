"""A run's resolved plan: every "auto" of the config decided once, before any work.

``resolve(cfg, data, device)`` turns a ``RunConfig`` (which may say ``auto`` for the device,
precision and augmentation) and the loaded data into a frozen ``Plan``: the device, the compute
precision, the augmentation kind, whether the final evaluation uses test-time augmentation, the
model's constructor arguments, the normalisation and the distributed setup. The loop reads the
plan and nothing else, and ``config.json`` records the plan's resolved config, not "auto".
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from digitlab.config import RunConfig, TrainConfig, check_config
from digitlab.data import canonical_name
from digitlab.data.base import ImageData
from digitlab.data.loader import default_augment
from digitlab.engine import dist
from digitlab.engine.device import resolve_device, resolve_precision
from digitlab.engine.optim import model_kwargs
from digitlab.errors import DigitlabError, unknown_name

NORMALIZATIONS = ("dataset", "0.5", "none")
DIGIT_DATASETS = ("mnist", "digits")


@dataclass(frozen=True)
class Plan:
    """What a run does, with nothing left to decide. ``config`` is the resolved config (written to
    config.json and every checkpoint); the other fields are what the loop needs from it."""

    config: RunConfig
    device: torch.device  # this rank's device
    precision: str  # fp32, bf16 or fp16: what autocast runs the forward pass in
    augment: str  # none, shift, crop-flip, robust
    tta: bool  # the final evaluation averages test-time augmented views
    dataset: str  # the dataset's name, or an image folder's absolute path
    model_name: str
    model_args: dict
    mean: tuple[float, ...]  # the normalisation every batch, checkpoint and prediction uses
    std: tuple[float, ...]
    dist: dist.DistInfo
    steps_per_epoch: int

    @property
    def train(self) -> TrainConfig:
        return self.config.train

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.train.epochs


def normalization(kind: str, data: ImageData) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std (on the [0, 1] scale) for ``normalize``: the dataset's statistics, 0.5/0.5 per channel
    (torchvision's ``Normalize((0.5,)*3, (0.5,)*3)`` of the CIFAR tutorial), or none (pixels / 255, what
    ``ToTensor()`` alone gives)."""
    c = data.channels
    if kind == "dataset":
        return tuple(data.mean), tuple(data.std)
    if kind == "0.5":
        return (0.5,) * c, (0.5,) * c
    if kind == "none":
        return (0.0,) * c, (1.0,) * c
    raise unknown_name("normalization", kind, list(NORMALIZATIONS))


def final_tta(tta: bool, augment: str) -> bool:
    """Test-time augmentation's views are shifts (and flips for colour images), so only a model trained
    with augmentation is evaluated on them."""
    return tta and augment != "none"


def resolve(
    cfg: RunConfig,
    data: ImageData,
    device: torch.device | str | None = None,
    info: dist.DistInfo | None = None,
) -> Plan:
    """Decide everything ``cfg`` leaves open, for ``data`` on ``device`` (None: ``cfg.train.device``).

    Pure: it joins no process group and changes no global state (``train`` does that).
    """
    check_config(cfg)
    info = dist.detect() if info is None else info
    base = device if isinstance(device, torch.device) else resolve_device(device or cfg.train.device)
    rank_device = dist.rank_device(info, base)
    precision = resolve_precision(cfg.train.precision, rank_device)
    augment = default_augment(data.name) if cfg.data.augment == "auto" else cfg.data.augment
    mean, std = normalization(cfg.data.normalize, data)
    resolved = copy.deepcopy(cfg)
    resolved.train.device, resolved.train.precision, resolved.data.augment = str(base), precision, augment
    if _is_folder(cfg.data.dataset):  # so that eval and --resume find it from any directory
        resolved.data.dataset = str(Path(cfg.data.dataset).expanduser().resolve())
    dataset = resolved.data.dataset if _is_folder(cfg.data.dataset) else data.name
    global_batch = cfg.train.batch_size * info.world_size
    return Plan(
        config=resolved,
        device=rank_device,
        precision=precision,
        augment=augment,
        tta=final_tta(cfg.train.tta, augment),
        dataset=dataset,
        model_name=cfg.model.model,
        model_args=model_kwargs(cfg.model, data),
        mean=mean,
        std=std,
        dist=info,
        steps_per_epoch=math.ceil(data.train_x.shape[0] / global_batch),
    )


def check_folder(dataset: str) -> None:
    """A run or checkpoint names its image folder by absolute path: say so plainly when it has moved."""
    if canonical_name(dataset) is None and Path(dataset).is_absolute() and not Path(dataset).exists():
        raise DigitlabError(f"image folder {dataset} no longer exists (moved or deleted?)")


def _is_folder(dataset: str) -> bool:
    return canonical_name(dataset) is None and Path(dataset).expanduser().is_dir()


def task_of(data: ImageData) -> str:
    """``digits`` (predict reads numbers, frames digits like MNIST) or ``images``."""
    digits = data.channels == 1 and data.classes == [str(i) for i in range(10)]
    return "digits" if data.name in DIGIT_DATASETS or (digits and data.name != "fashion-mnist") else "images"


def trained_with_tta(ckpt: dict) -> bool:
    """Whether the training that wrote ``ckpt`` evaluated its final model with test-time augmentation
    (``augment`` "auto" in a config from before the plan recorded it is resolved by dataset). An exported
    ONNX model's fields (``load_onnx``) carry the answer, worked out at export, as ``final_tta``."""
    if "final_tta" in ckpt:
        return bool(ckpt["final_tta"])
    cfg = ckpt.get("config") or {}
    augment = cfg.get("data", {}).get("augment", "none")
    if augment == "auto":
        augment = default_augment(ckpt.get("dataset", ""))
    return final_tta(bool(cfg.get("train", {}).get("tta", False)), augment)
