"""`digitlab train`: a training run from a preset, the dataset's defaults and the flags given."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from digitlab.cli.app import app
from digitlab.config import RunConfig
from digitlab.errors import DigitlabError

console = Console()


def build_config(preset: str | None, overrides: dict[str, dict]) -> RunConfig:
    """Defaults (the dataset's own where it has them), then the preset, then every flag the user
    actually gave (None means not given)."""
    from digitlab.engine.presets import apply_dataset_defaults, apply_preset

    cfg = RunConfig()
    if preset:
        apply_preset(cfg, preset)
    else:
        apply_dataset_defaults(cfg, overrides.get("data", {}).get("dataset") or cfg.data.dataset)
    for section, values in overrides.items():
        target = cfg if section == "run" else getattr(cfg, section)
        for k, v in values.items():
            if v is not None:
                setattr(target, k, v)
    return cfg


@app.command()
def train(
    preset: str | None = typer.Option(
        None, help="A named recipe: fast (default), best, seed000, ... (`digitlab train --list-presets`)."
    ),
    list_presets: bool = typer.Option(False, "--list-presets", help="Print the presets and exit."),
    dataset: str | None = typer.Option(None, help="mnist, fashion-mnist, cifar10, digits, or an image-folder path."),
    data_dir: str | None = typer.Option(
        None, help="Where the data files are (default: $DIGITLAB_DATA, then the cache)."
    ),
    download: bool | None = typer.Option(None, "--download/--no-download", help="Fetch missing data files."),
    val_fraction: float | None = typer.Option(None, help="Hold out this fraction of train for evaluation."),
    augment: str | None = typer.Option(None, help="auto, none, shift, crop-flip, robust."),
    grayscale: bool | None = typer.Option(None, "--grayscale/--rgb", help="Image folders: force gray or RGB."),
    image_size: int | None = typer.Option(None, help="Image folders: resize to this square size."),
    limit_train: int | None = typer.Option(None, help="Use only the first N training images."),
    limit_test: int | None = typer.Option(None, help="Use only the first N test images."),
    model: str | None = typer.Option(None, help="Model name (`digitlab models`)."),
    width: int | None = typer.Option(None, help="Width knob of models that have one."),
    epochs: int | None = typer.Option(None),
    batch_size: int | None = typer.Option(None),
    lr: float | None = typer.Option(None, help="Peak learning rate."),
    optimizer: str | None = typer.Option(None, help="sgd, adam, adamw, adadelta."),
    momentum: float | None = typer.Option(None),
    nesterov: bool | None = typer.Option(None, "--nesterov/--no-nesterov"),
    weight_decay: float | None = typer.Option(None),
    schedule: str | None = typer.Option(None, help="none, step, cosine, onecycle."),
    gamma: float | None = typer.Option(None, help="Step schedule: lr factor per epoch."),
    warmup: float | None = typer.Option(None, help="Onecycle: fraction of steps warming up."),
    label_smoothing: float | None = typer.Option(None),
    ema: bool | None = typer.Option(None, "--ema/--no-ema", help="Evaluate and save an EMA of the weights."),
    tta: bool | None = typer.Option(None, "--tta/--no-tta", help="Test-time augmentation at the final evaluation."),
    seed: int | None = typer.Option(None),
    device: str | None = typer.Option(None, help="auto, cpu, cuda, cuda:N, mps."),
    precision: str | None = typer.Option(
        None, help="auto (bf16 where the hardware has it, else fp32), fp32, bf16, fp16."
    ),
    compile: bool | None = typer.Option(
        None,
        "--compile/--no-compile",
        help="torch.compile the model (compiled before the training clock; time reported apart).",
    ),
    compile_step: bool | None = typer.Option(
        None,
        "--compile-step/--no-compile-step",
        help="torch.compile the optimizer step (on in the seed presets: Adadelta is many small ops).",
    ),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last"),
    dry_run: bool | None = typer.Option(None, "--dry-run", help="A few batches of one epoch."),
    eval_every: int | None = typer.Option(None, help="Evaluate every N epochs."),
    threads: int | None = typer.Option(None, help="CPU threads for torch."),
    name: str | None = typer.Option(None, help="Run directory name (default: a timestamp)."),
    runs_dir: str | None = typer.Option(None, help="Parent of run directories (default: runs)."),
    resume: str | None = typer.Option(None, help="Continue an interrupted run: its directory or last.pt."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or per-epoch lines."),
) -> None:
    """Train a model; with no options, the fast default model on MNIST."""
    from digitlab.engine.checkpoint import load_checkpoint
    from digitlab.engine.train import train as run_training

    if list_presets:
        from digitlab.engine.presets import list_presets as presets

        for k, v in presets().items():
            console.print(f"[bold]{k:<14}[/] {v}", highlight=False)
        return
    overrides = {
        "data": dict(
            dataset=dataset,
            data_dir=data_dir,
            download=download,
            val_fraction=val_fraction,
            augment=augment,
            grayscale=grayscale,
            image_size=image_size,
            limit_train=limit_train,
            limit_test=limit_test,
        ),
        "model": dict(model=model, width=width),
        "train": dict(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            schedule=schedule,
            gamma=gamma,
            warmup=warmup,
            label_smoothing=label_smoothing,
            ema=ema,
            tta=tta,
            seed=seed,
            device=device,
            precision=precision,
            compile=compile,
            compile_step=compile_step,
            channels_last=channels_last,
            dry_run=dry_run,
            eval_every=eval_every,
            threads=threads,
        ),
        "run": dict(name=name, runs_dir=runs_dir),
    }
    state = None
    if resume:
        state = load_checkpoint(resume, default_name="last.pt")
        if "optimizer" not in state:
            raise DigitlabError(
                f"{resume} has no training state (only last.pt does); pass the run directory or its last.pt"
            )
        cfg = RunConfig.from_dict(state["config"])
        # A resumed run keeps its recipe; only the length, device, threads, compiling and data location may change.
        keep = {
            "epochs": epochs,
            "device": device,
            "threads": threads,
            "compile": compile,
            "compile_step": compile_step,
        }
        for k, v in keep.items():
            if v is not None:
                setattr(cfg.train, k, v)
        if data_dir is not None:
            cfg.data.data_dir = data_dir
        cfg.runs_dir = str(Path(resume if Path(resume).is_dir() else Path(resume).parent).parent)
        cfg.name = Path(resume).name if Path(resume).is_dir() else Path(resume).parent.name
        if state["epoch"] >= cfg.train.epochs:
            console.print(f"run already finished its {cfg.train.epochs} epochs; pass --epochs N to train longer")
            return
        console.print(f"resuming {cfg.name} after epoch {state['epoch']} of {cfg.train.epochs}", highlight=False)
    else:
        cfg = build_config(preset, overrides)
    try:
        result = run_training(cfg, resume=state, quiet=quiet, console=console)
    except KeyboardInterrupt:
        run_dir = Path(cfg.runs_dir) / (cfg.name or "")
        Console(stderr=True).print(
            f"\ninterrupted: the last completed epoch is saved; continue with `digitlab train --resume {run_dir}`",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130)
    from digitlab.engine.dist import detect

    if not detect().is_main:
        return
    compiled = f" (+{result.compile_seconds:.1f}s compiling)" if result.compile_seconds else ""
    views = " with test-time augmentation" if result.tta else ""
    console.print(
        f"final test accuracy {result.final_acc:.2%}{views} (best {result.best_acc:.2%}) after "
        f"{result.train_seconds:.1f}s of training{compiled}\nrun directory: {result.run_dir}",
        highlight=False,
        soft_wrap=True,
    )
