"""`digitlab train`: a training run from a preset, the dataset's defaults and the flags given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from digitlab.cli.app import app
from digitlab.cli.flags import given, with_config_flags
from digitlab.cli.output import Console, console
from digitlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig


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


# Config sections whose fields are `digitlab train` flags, and the key build_config files them under.
SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "run": RunConfig}


@app.command()
@with_config_flags(*SECTIONS.values())
def train(
    preset: str | None = typer.Option(
        None, help="A named recipe: fast (default), best, seed000, ...; see --list-presets."
    ),
    list_presets: bool = typer.Option(False, "--list-presets", help="Print the presets and exit."),
    resume: str | None = typer.Option(None, help="Continue an interrupted run: its directory or last.pt."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or per-epoch lines."),
    **flags: Any,
) -> None:
    """Train a model (default: the fast model on MNIST).

    Values come from the preset (or the dataset's own defaults, for digits), then from the flags
    given; the defaults shown are those without a preset.
    """
    from digitlab.engine.train import train as run_training

    if list_presets:
        from digitlab.engine.presets import list_presets as presets

        for k, v in presets().items():
            console.print(f"[bold]{k:<14}[/] {v}", highlight=False)
        return
    overrides = {section: given(flags, cls) for section, cls in SECTIONS.items()}
    state = None
    if not resume:  # torchrun --max-restarts: a restarted worker continues its run from last.pt
        from digitlab.engine.dist import restart_resume

        resume = restart_resume(overrides["run"])
    from digitlab.engine.dist import detect

    main_rank = detect().is_main  # under torchrun only rank 0 speaks
    say = console.print if main_rank else lambda *args, **kwargs: None
    if resume:  # the engine decides what a resume may change (engine/resume.py)
        from digitlab.engine.resume import load_resume_state, resume_config, run_dir_of_resume
        from digitlab.engine.rundir import is_finished

        state = load_resume_state(resume)
        cfg = resume_config(state, resume, overrides | {"run": {**overrides.get("run", {}), "preset": preset}})
        if state["epoch"] >= cfg.train.epochs:
            if is_finished(run_dir_of_resume(resume), state):
                say(f"run already finished its {cfg.train.epochs} epochs; pass --epochs N to train longer")
                return
            say(f"finishing {cfg.name}: its {state['epoch']} epochs are trained", highlight=False)
        else:
            say(f"resuming {cfg.name} after epoch {state['epoch']} of {cfg.train.epochs}", highlight=False)
    else:
        cfg = build_config(preset, overrides)
    try:
        result = run_training(cfg, resume=state, quiet=quiet, console=Console())  # a real one: progress bars
    except KeyboardInterrupt:
        run_dir = Path(cfg.runs_dir) / (cfg.name or "")
        Console(stderr=True).print(
            f"\ninterrupted: the last completed epoch is saved; continue with `digitlab train --resume {run_dir}`",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    if not main_rank:
        return
    compiled = f" (+{result.compile_seconds:.1f}s compiling)" if result.compile_seconds else ""
    views = " with test-time augmentation" if result.tta else ""
    console.print(
        f"final test accuracy {result.final_acc:.2%}{views} (best {result.best_acc:.2%}) after "
        f"{result.train_seconds:.1f}s of training{compiled}\nrun directory: {result.run_dir}",
        highlight=False,
        soft_wrap=True,
    )
