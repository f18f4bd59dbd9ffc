"""`digitlab export`: a trained checkpoint slimmed to what inference needs (and shipped as the default)."""

from __future__ import annotations

from pathlib import Path

import typer

from digitlab.cli.app import app
from digitlab.errors import DigitlabError


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint (best.pt, last.pt) or a run folder."),
    out: Path | None = typer.Argument(None, help="Where to write the slim checkpoint."),
    as_default: bool = typer.Option(False, "--as-default", help="Write it as the package's shipped default model."),
    half: bool = typer.Option(True, "--half/--full", help="Store weights as float16 (half the size)."),
    calibrate: bool | None = typer.Option(
        None,
        "--calibrate/--no-calibrate",
        help="Fit a temperature on the dataset's test split so that probabilities mean what they say "
        "(default: when the data can be loaded; --no-calibrate keeps the training's).",
    ),
    data_dir: str | None = typer.Option(None, help="Where the data files are (for --calibrate)."),
) -> None:
    """Write an inference-only checkpoint: no optimizer, scheduler, RNG or history; float16 weights by
    default; confidence calibrated on the test split."""
    from digitlab.engine.checkpoint import load_checkpoint, save_checkpoint
    from digitlab.inference.predictor import default_model_path, slim_checkpoint

    if (out is None) == (not as_default):
        raise DigitlabError("give either an output path or --as-default (not both)")
    dest = default_model_path(must_exist=False) if as_default else out
    ckpt = load_checkpoint(checkpoint)
    slim = slim_checkpoint(ckpt, half=half)
    if calibrate is not False:
        from digitlab.cli.eval import checkpoint_data
        from digitlab.evaluate.calibration import calibrate_checkpoint

        try:
            data = checkpoint_data(ckpt, data_dir=data_dir)
        except DigitlabError as exc:
            if calibrate:
                raise
            kept = (
                f"kept the training's temperature {slim['temperature']:.3f}"
                if "temperature" in slim
                else "not calibrated"
            )
            print(f"{kept} ({exc}); pass --data-dir, or --no-calibrate to skip")
        else:  # fitted again, on the weights as exported (float16 by default)
            t, before, after = calibrate_checkpoint(ckpt | {"state_dict": slim["state_dict"]}, data)
            slim["temperature"] = t
            print(
                f"calibrated on {data.name} test ({len(data.test_y):,} images): temperature {t:.3f}, "
                f"NLL {before:.4f} -> {after:.4f}"
            )
    path = save_checkpoint(dest, slim)
    path.chmod(0o644)  # a model file to share: readable by everyone, whatever the umask
    acc = (ckpt.get("metrics") or {}).get("test_acc")
    shown = f", test accuracy {acc:.2%}" if isinstance(acc, float) else ""
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB; {ckpt['model_name']}{shown})")
