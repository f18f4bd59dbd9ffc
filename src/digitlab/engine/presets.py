"""Named recipes: each seed's own training recipe, and digitlab's fast ones.

A preset is a set of overrides on top of ``RunConfig`` defaults; flags given on the command
line win over the preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from digitlab.config import RunConfig
from digitlab.errors import unknown_name


@dataclass(frozen=True)
class Preset:
    description: str
    data: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


# The seeds' recipes, as they wrote them (optimizer, lr, epochs, batch, input normalisation: seeds 001, 003
# and 004 fed ToTensor()'s raw [0, 1] pixels, 002's CIFAR Net Normalize(0.5, 0.5)), on the fast data path.
# Precision stays auto (bf16 where the CPU has it); `--precision fp32` computes as the seeds did.
_SEED = dict(schedule="none", label_smoothing=0.0, weight_decay=0.0, nesterov=False, momentum=0.0, tta=False)

# digitlab's own recipes: Nesterov SGD with a one-cycle schedule, label smoothing, bf16 where native.
_ONECYCLE = dict(
    optimizer="sgd",
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    schedule="onecycle",
    warmup=0.2,
    label_smoothing=0.1,
    batch_size=128,
    precision="auto",
    channels_last=True,
)

# airbench94_muon (Keller Jordan): Muon for the conv filters, Nesterov SGD for biases and the head at
# airbench's per-example rates (engine/optim.py), decaying linearly to 0; 2e-6 weight decay per example at
# Muon's lr 0.24; label smoothing 0.2; airbench's six test-time views.
_AIRBENCH = dict(
    optimizer="muon",
    lr=0.24,
    momentum=0.6,
    nesterov=True,
    weight_decay=2e-6 / 0.24,
    schedule="onecycle",
    warmup=0.0,
    label_smoothing=0.2,
    precision="auto",
    channels_last=True,
    tta=True,
)

# Datasets that the MNIST-tuned defaults serve badly: applied under the flags when no preset is named.
DATASET_DEFAULTS: dict[str, dict] = {
    # 1,438 training images: 2 epochs of batch 128 are only 24 steps, too few for the default model;
    # 10 epochs of batch 32 are 450 steps, still a short run (BENCHMARKS.md has the accuracy).
    "digits": dict(epochs=10, batch_size=32),
}

PRESETS: dict[str, Preset] = {
    "seed000": Preset(
        "seed 000 / PyTorch examples: cnn, Adadelta lr 1.0, step gamma 0.7, 14 epochs, batch 64",
        data=dict(dataset="mnist", augment="none"),
        model=dict(model="cnn"),
        # compile_step: unfused, Adadelta's step is a large share of this model's CPU step (BENCHMARKS.md)
        train=dict(
            _SEED, optimizer="adadelta", lr=1.0, schedule="step", gamma=0.7, epochs=14, batch_size=64, compile_step=True
        ),
    ),
    "seed001": Preset(
        "seed 001: cnn-k, SGD lr 0.01, 5 epochs, batch 32, raw pixels",
        data=dict(dataset="mnist", augment="none", normalize="none"),
        model=dict(model="cnn-k"),
        train=dict(_SEED, optimizer="sgd", lr=0.01, epochs=5, batch_size=32),
    ),
    "seed002-mlp": Preset(
        "seed 002: mlp (hidden 8), SGD lr 0.01 momentum 0.5, 1 epoch, batch 64",
        data=dict(dataset="mnist", augment="none"),
        model=dict(model="mlp", width=8),
        train=dict(_SEED, optimizer="sgd", lr=0.01, momentum=0.5, epochs=1, batch_size=64),
    ),
    "seed002-cnn": Preset(
        "seed 002: cnn-small (6 features), SGD lr 0.01 momentum 0.5, 1 epoch, batch 64",
        data=dict(dataset="mnist", augment="none"),
        model=dict(model="cnn-small"),
        train=dict(_SEED, optimizer="sgd", lr=0.01, momentum=0.5, epochs=1, batch_size=64),
    ),
    "seed002-cifar": Preset(
        "seed 002: cifar-net on CIFAR-10, Adam lr 0.001, 10 epochs, batch 128, normalised 0.5/0.5",
        data=dict(dataset="cifar10", augment="none", normalize="0.5"),
        model=dict(model="cifar-net"),
        train=dict(_SEED, optimizer="adam", lr=0.001, epochs=10, batch_size=128),
    ),
    "seed002-vgg": Preset(
        "seed 002: vgg on CIFAR-10 with crop+flip, Adam lr 0.001, 10 epochs, batch 128",
        data=dict(dataset="cifar10", augment="crop-flip"),
        model=dict(model="vgg"),
        train=dict(_SEED, optimizer="adam", lr=0.001, epochs=10, batch_size=128),
    ),
    "seed003": Preset(
        "seed 003: lenet5, Adam lr 0.001, 10 epochs, batch 64, raw pixels",
        data=dict(dataset="mnist", augment="none", normalize="none"),
        model=dict(model="lenet5"),
        train=dict(_SEED, optimizer="adam", lr=0.001, epochs=10, batch_size=64),
    ),
    "seed004": Preset(
        "seed 004: cnn-004, Adam lr 0.001, 5 epochs, batch 500, raw pixels",
        data=dict(dataset="mnist", augment="none", normalize="none"),
        model=dict(model="cnn-004"),
        train=dict(_SEED, optimizer="adam", lr=0.001, epochs=5, batch_size=500),
    ),
    # digitlab's recipes (BENCHMARKS.md has their measured times); the defaults of config.py are `fast`.
    "fast": Preset(
        "the default: fast (width 16), 2 epochs, SGD-Nesterov one-cycle lr 0.2, batch 128, shift +-2, bf16 where native, "
        "shift TTA",
        data=dict(dataset="mnist", augment="shift"),
        model=dict(model="fast", width=16),
        train=dict(_ONECYCLE, lr=0.2, epochs=2, tta=True),
    ),
    "fast-99.5": Preset(
        "99.5%: fast (width 32), 5 epochs, one-cycle lr 0.2, batch 128, shift +-2, bf16 where native, shift TTA",
        data=dict(dataset="mnist", augment="shift"),
        model=dict(model="fast", width=32),
        train=dict(_ONECYCLE, lr=0.2, epochs=5, tta=True),
    ),
    "best": Preset(
        "highest accuracy in minutes: fast-wide (width 48), 12 epochs, one-cycle lr 0.1, shift +-2, shift TTA",
        data=dict(dataset="mnist", augment="shift"),
        model=dict(model="fast-wide"),
        train=dict(_ONECYCLE, lr=0.1, epochs=12, ema=False, tta=True),
    ),
    "handwriting": Preset(
        "the shipped model for real handwriting: fast-wide (width 32), 12 epochs, styles augmentation (other "
        "writers' stroke widths, aspect ratios, slant, bitmaps, continental 1s), one-cycle lr 0.1, batch 128",
        data=dict(dataset="mnist", augment="styles"),
        model=dict(model="fast-wide", width=32),
        train=dict(_ONECYCLE, lr=0.1, epochs=12, tta=False),  # one view: what `digitlab predict` reads
    ),
    "cifar-fast": Preset(
        "CIFAR-10, airbench94_muon's recipe: fast-cifar (64/256/256, whitened stem), 8 epochs, Muon lr 0.24 for the "
        "filters and Nesterov SGD for the rest, batch 2000, linear decay, flip-translate, label smoothing 0.2, "
        "6-view TTA",
        data=dict(dataset="cifar10", augment="flip-translate"),
        model=dict(model="fast-cifar"),
        train=dict(_AIRBENCH, epochs=8, batch_size=2000),
    ),
    # The same recipe and code path with a narrower net and a smaller batch: minutes on a few CPU cores.
    "cifar-fast-cpu": Preset(
        "CIFAR-10 on a CPU, the same recipe: fast-cifar-cpu (32/64/128, ~6x fewer multiply-adds), 8 epochs, batch 1000",
        data=dict(dataset="cifar10", augment="flip-translate"),
        model=dict(model="fast-cifar-cpu"),
        train=dict(_AIRBENCH, epochs=8, batch_size=1000),
    ),
}


def list_presets() -> dict[str, str]:
    return {name: p.description for name, p in PRESETS.items()}


def apply_dataset_defaults(cfg: RunConfig, dataset: str) -> RunConfig:
    """Set ``dataset``'s own training defaults (``DATASET_DEFAULTS``) on ``cfg``; other datasets keep them."""
    for k, v in DATASET_DEFAULTS.get(dataset, {}).items():
        setattr(cfg.train, k, v)
    return cfg


def apply_preset(cfg: RunConfig, name: str) -> RunConfig:
    """Overwrite ``cfg`` fields with the preset's values (in place) and return it."""
    if name not in PRESETS:
        raise unknown_name("preset", name, list(PRESETS))
    p = PRESETS[name]
    for section, values in (("data", p.data), ("model", p.model), ("train", p.train)):
        target = getattr(cfg, section)
        for k, v in values.items():
            setattr(target, k, v)
    cfg.preset = name
    return cfg
