"""Typed configuration: every option of a training run, with why each default is what it is.

The CLI maps these fields to kebab-case flags; the resolved config is written as
``config.json`` next to the results and stored inside every checkpoint.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from digitlab.errors import DigitlabError, unknown_name


def option(default: Any, help: str, *, flag: str | None = None, default_text: str | None = None) -> Any:
    """A config field that is also a command-line flag: its help, and its flag where the kebab-case
    name is not it (``--grayscale/--rgb``); ``default_text`` describes a default that is not a value.

    The CLI builds ``digitlab train``'s options from these, so a new option is one line here.
    """
    return field(default=default, metadata={"help": help, "flag": flag, "default_text": default_text})


def flag_help(f: Field) -> str:
    """A field's help with its default, in pytorch/examples' style: "Batch size (default: 128)."."""
    text = f.metadata.get("default_text")
    if text is None and f.default is not MISSING and f.default is not None:
        text = ("on" if f.default else "off") if isinstance(f.default, bool) else str(f.default)
    help = f.metadata.get("help", "").rstrip(".")
    return f"{help} (default: {text})." if text else f"{help}."


@dataclass
class DataConfig:
    dataset: str = option("mnist", "mnist, fashion-mnist, cifar10, digits, or a path to an image folder")
    data_dir: str | None = option(
        None, "Folder with the data files", default_text="$DIGITLAB_DATA, then the user cache directory"
    )
    download: bool = option(True, "Fetch missing files from the official mirrors", flag="--download/--no-download")
    # >0 holds out this part of train for evaluation instead of the test set (for tuning without peeking)
    val_fraction: float = option(0.0, "Hold out this fraction of train for evaluation instead of the test set")
    augment: str = option(
        "auto",
        "auto, none, shift, crop-flip, flip-translate (airbench's), robust (handwriting), styles (other writers: digits)",
        default_text="auto: shift for digits, crop-flip for CIFAR-10",
    )
    grayscale: bool | None = option(
        None, "Image folders: force gray or RGB", flag="--grayscale/--rgb", default_text="as the images are"
    )
    image_size: int | None = option(
        None, "Image folders: resize to this square size", default_text="28 for gray, 32 for RGB"
    )
    limit_train: int | None = option(None, "Use only the first N training images (quick experiments)")
    limit_test: int | None = option(None, "Use only the first N test images")
    # The seed tutorials differ: 001, 003 and 004 fed raw pixels, 002's CIFAR Net normalised with 0.5/0.5
    normalize: str = option(
        "dataset", "Input normalisation: dataset (its mean/std), 0.5 (mean 0.5, std 0.5) or none (pixels / 255)"
    )


@dataclass
class ModelConfig:
    model: str = option("fast", "Model name (`digitlab models` lists them), or package.module:ClassName for your own")
    width: int | None = option(
        None, "Width knob where the model has one (mlp hidden units, fast channels)", default_text="the model's"
    )


@dataclass
class TrainConfig:
    # the default recipe (fast, width 16, with TTA) trains 2 epochs; BENCHMARKS.md has its accuracy
    epochs: int = option(2, "Epochs to train")
    # large enough to keep the CPU busy, small enough for ~470 steps per epoch on MNIST
    batch_size: int = option(128, "Training batch size")
    # BatchNorm nets take a high peak with Nesterov SGD
    lr: float = option(0.2, "Learning rate (the peak of the one-cycle schedule)")
    optimizer: str = option(
        "sgd", "sgd, adam, adamw, adadelta, muon (conv filters; SGD rates per example, as airbench's)"
    )
    momentum: float = option(0.9, "SGD momentum")
    nesterov: bool = option(True, "Nesterov momentum for SGD", flag="--nesterov/--no-nesterov")
    weight_decay: float = option(5e-4, "L2 weight decay")
    schedule: str = option("onecycle", "Learning-rate schedule: none, step, cosine, onecycle")
    gamma: float = option(0.7, "Step schedule: multiply the learning rate by this every epoch (seed 000)")
    warmup: float = option(0.2, "Onecycle: fraction of the steps spent warming up")
    label_smoothing: float = option(0.1, "Label smoothing of the cross-entropy loss")
    ema: bool = option(False, "Evaluate and save an exponential moving average of the weights", flag="--ema/--no-ema")
    tta: bool = option(
        True,
        "Test-time augmentation at the final evaluation (shifts; flips after crop-flip training)",
        flag="--tta/--no-tta",
    )
    seed: int = option(0, "Random seed (weights, batch order, augmentation)")
    device: str = option("auto", "auto, cpu, cuda, cuda:N, mps", default_text="auto: cuda, then mps, then cpu")
    precision: str = option(
        "auto", "auto, fp32, bf16, fp16", default_text="auto: bf16 where the CPU/GPU has it in hardware, else fp32"
    )
    compile: bool = option(
        False,
        "torch.compile the model (compiled before the training clock; time reported apart)",
        flag="--compile/--no-compile",
    )
    # the seed presets' Adadelta is many small ops, which compiling fuses
    compile_step: bool = option(
        False, "torch.compile the optimizer step (on in the seed presets)", flag="--compile-step/--no-compile-step"
    )
    channels_last: bool = option(
        True, "NHWC memory layout (faster convolutions on CPU)", flag="--channels-last/--no-channels-last"
    )
    dry_run: bool = option(False, "A few batches of one epoch, to check that everything runs", flag="--dry-run")
    eval_every: int = option(1, "Evaluate every N epochs (the last one always)")
    threads: int | None = option(None, "CPU threads for torch", default_text="torch's default")
    log_every: int = option(0, "Print a step line (loss, lr, images/s) and write steps.csv every N steps; 0: off")
    tensorboard: bool = option(
        False,
        "Also write the step and epoch scalars for TensorBoard (needs the tensorboard package)",
        flag="--tensorboard/--no-tensorboard",
    )


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str | None = option(None, "Run directory name under --runs-dir", default_text="a timestamp")
    runs_dir: str = option("runs", "Parent folder of run directories")
    # set by --preset (its own option: it chooses defaults rather than being one)
    preset: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return cls(
            data=DataConfig(**d.get("data", {})),
            model=ModelConfig(**d.get("model", {})),
            train=TrainConfig(**d.get("train", {})),
            **{k: d[k] for k in ("name", "runs_dir", "preset") if k in d},
        )


def field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


# (section, field, lowest, highest, whether the lowest is allowed); None values are always allowed.
_RANGES = [
    ("train", "epochs", 1, None, True),
    ("train", "batch_size", 1, None, True),
    ("train", "lr", 0, None, False),
    ("train", "momentum", 0, 1, True),
    ("train", "weight_decay", 0, None, True),
    ("train", "gamma", 0, None, False),
    ("train", "warmup", 0, 1, True),
    ("train", "label_smoothing", 0, 1, True),
    ("train", "eval_every", 1, None, True),
    ("train", "threads", 1, None, True),
    ("train", "log_every", 0, None, True),
    ("model", "width", 1, None, True),
    ("data", "val_fraction", 0, 1, True),
    ("data", "limit_train", 1, None, True),
    ("data", "limit_test", 1, None, True),
    ("data", "image_size", 1, None, True),
]


def check_config(cfg: RunConfig) -> None:
    """Refuse out-of-range numbers before any work, with the flag to fix, instead of a traceback
    (or, for ``epochs 0``, a run that trains nothing and reports nan%)."""
    problems = []
    for section, name, lo, hi, lo_ok in _RANGES:
        v = getattr(getattr(cfg, section), name)
        if v is None:
            continue
        too_low = v < lo if lo_ok else v <= lo
        if too_low or (hi is not None and v >= hi):
            if hi is not None:
                want = f"in [{lo}, {hi})" if lo_ok else f"in ({lo}, {hi})"
            else:
                want = f"at least {lo}" if lo_ok else f"above {lo}"
            problems.append(f"--{name.replace('_', '-')} must be {want}, got {v}")
    if problems:
        raise DigitlabError("; ".join(problems))
    # The loader owns the augmentation kinds (it imports torch, so it is imported only here, when a
    # run is checked); "auto" is the config's own value, resolved per dataset before training.
    from digitlab.data.loader import AUGMENTATIONS

    if cfg.data.augment != "auto" and cfg.data.augment not in AUGMENTATIONS:
        raise unknown_name("augmentation", cfg.data.augment, ["auto", *AUGMENTATIONS])
