"""Typed configuration: every option of a training run, with why each default is what it is.

The CLI maps these fields to kebab-case flags; the resolved config is written as
``config.json`` next to the results and stored inside every checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from digitlab.errors import DigitlabError


@dataclass
class DataConfig:
    dataset: str = "mnist"  # mnist, fashion-mnist, cifar10, digits, or a path to an image folder
    data_dir: str | None = None  # None: $DIGITLAB_DATA, then the user cache directory
    download: bool = True  # fetch missing files from the official mirrors
    val_fraction: float = 0.0  # >0 holds out this part of train for evaluation instead of the test set
    augment: str = "auto"  # auto (dataset's default), none, shift, crop-flip, robust (handwriting)
    grayscale: bool | None = None  # image folders: None keeps what the images are
    image_size: int | None = None  # image folders: resize to this square size (None: 28 for gray, 32 for RGB)
    limit_train: int | None = None  # use only the first N training images (quick experiments)
    limit_test: int | None = None


@dataclass
class ModelConfig:
    model: str = "fast"  # registry name; `digitlab models` lists them
    width: int | None = None  # width knob where the model has one (mlp hidden, fast channels)


@dataclass
class TrainConfig:
    epochs: int = 2  # fast (width 16) reaches 99.2-99.3% in 2 epochs with TTA (~8 s on 2 CPU cores; BENCHMARKS.md)
    batch_size: int = 128  # large enough to keep the CPU busy, small enough for ~470 steps per epoch
    lr: float = 0.2  # peak of the one-cycle schedule; BatchNorm nets take it with Nesterov SGD
    optimizer: str = "sgd"  # sgd, adam, adamw, adadelta
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # none, step, cosine, onecycle
    gamma: float = 0.7  # step schedule: multiply lr by gamma every epoch (seed 000)
    warmup: float = 0.2  # onecycle: fraction of steps spent warming up
    label_smoothing: float = 0.1
    ema: bool = False  # keep an exponential moving average of weights (used by --preset best)
    tta: bool = True  # the final evaluation averages augmented views (shifts; flips after crop-flip training)
    seed: int = 0
    device: str = "auto"  # auto: cuda, then mps, then cpu
    precision: str = "auto"  # auto, fp32, bf16, fp16; auto: bf16 where the CPU/GPU has it in hardware, else fp32
    compile: bool = False  # torch.compile the model
    compile_step: bool = False  # torch.compile the optimizer step (the seed presets' Adadelta: many small ops)
    channels_last: bool = True
    dry_run: bool = False  # a few batches of one epoch, to check that everything runs
    eval_every: int = 1  # evaluate every N epochs (the last one always)
    threads: int | None = None  # CPU threads; None leaves torch's default


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str | None = None  # run directory name under runs_dir; None: a timestamp
    runs_dir: str = "runs"
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
