"""`digitlab export`: a trained checkpoint slimmed to what inference needs (and shipped as the default)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from digitlab.cli.app import app
from digitlab.errors import DigitlabError, unknown_name


def write_seed_format(ckpt: dict, dest: Path) -> None:
    """A plain state_dict under the seed's key names (``models.seed_format``)."""
    import torch

    from digitlab.engine.checkpoint import write_atomically
    from digitlab.models.seed_format import seed_state_dict

    state = seed_state_dict(ckpt["model_name"], ckpt["state_dict"])
    path = write_atomically(dest, lambda f: torch.save(state, f))
    path.chmod(0o644)
    print(
        f"wrote {path} ({len(state)} tensors with seed key names; {ckpt['model_name']}: {', '.join(list(state)[:4])}, ...)"
    )


def write_onnx(slim: dict, dest: Path, data) -> None:
    """The ONNX graph, checked on the test split's images when the data is there (random pixels otherwise)."""
    from digitlab.inference.onnx_export import export_onnx

    result = export_onnx(slim, dest, check_images=data.test_x.cpu() if data is not None else None)
    result.path.chmod(0o644)
    inputs = (
        f"{result.n_checked} {data.name} test images" if result.real_inputs else f"{result.n_checked} random images"
    )
    print(
        f"wrote {result.path} ({result.path.stat().st_size / 1024:.0f} KB ONNX; {slim['model_name']}); "
        f"onnxruntime vs PyTorch on {inputs}: max abs logit difference {result.max_abs_diff:.2e}, "
        f"same class for {result.agree:.2%}"
    )


def in_installed_package(path: Path) -> bool:
    """Whether ``path`` lies in an installed package (site-packages), not in a source checkout. The
    shipped model is replaced from a checkout, where it is committed; an installed copy is not the
    user's to change, and pip would silently undo it."""
    return any(part in ("site-packages", "dist-packages") for part in Path(path).resolve().parts)


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
    fmt: str = typer.Option(
        "pt",
        "--format",
        help="pt: a slim digitlab checkpoint; onnx: an ONNX graph that takes pixels in [0, 1] (normalisation "
        "folded in; class names and temperature in its metadata), checked against PyTorch in onnxruntime.",
    ),
    seed_format: bool = typer.Option(
        False,
        "--seed-format",
        help="Write a plain state_dict with the seed's own key names (seed models only), which the "
        "tutorial's code loads with load_state_dict(strict=True).",
    ),
) -> None:
    """Write a slim checkpoint for inference.

    No optimizer, scheduler, RNG or history; float16 weights by default; confidence calibrated on
    the test split.
    """
    from digitlab.engine.checkpoint import load_checkpoint, save_checkpoint
    from digitlab.inference.predictor import default_model_path, slim_checkpoint

    if (out is None) == (not as_default):
        raise DigitlabError("give either an output path or --as-default (not both)")
    if fmt not in ("pt", "onnx"):
        raise unknown_name("export format", fmt, ["pt", "onnx"])
    if as_default and (fmt == "onnx" or seed_format):
        raise DigitlabError("--as-default writes a digitlab checkpoint; drop --format onnx / --seed-format")
    if fmt == "onnx" and seed_format:
        raise DigitlabError("--seed-format writes a PyTorch state_dict; it cannot be combined with --format onnx")
    dest = default_model_path(must_exist=False) if as_default else out
    assert dest is not None  # one of the two, checked above
    if as_default and in_installed_package(dest):
        raise DigitlabError(
            f"--as-default would overwrite the installed package's model ({dest}); write the model to a file "
            f"(digitlab export {checkpoint} model.pt) and use it with --model model.pt, or export --as-default "
            "from a source checkout (pip install -e .)"
        )
    ckpt = load_checkpoint(checkpoint)
    if seed_format:
        write_seed_format(ckpt, dest)
        return
    slim = slim_checkpoint(ckpt, half=half and fmt == "pt")  # ONNX stores float32 weights
    data = None
    if calibrate is not False:
        from digitlab.cli.eval import checkpoint_data
        from digitlab.engine.calibrate import calibrate_checkpoint

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
    if fmt == "onnx":
        if data is None and calibrate is False:  # not loaded for calibration: still check on real images
            from digitlab.cli.eval import checkpoint_data

            with contextlib.suppress(DigitlabError):
                data = checkpoint_data(ckpt, data_dir=data_dir)
        write_onnx(ckpt | slim, dest, data)  # slim's weights and temperature, the checkpoint's format marker
        return
    path = save_checkpoint(dest, slim)
    path.chmod(0o644)  # a model file to share: readable by everyone, whatever the umask
    acc = (ckpt.get("metrics") or {}).get("test_acc")
    shown = f", test accuracy {acc:.2%}" if isinstance(acc, float) else ""
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB; {ckpt['model_name']}{shown})")
    if as_default:  # its ONNX twin, which predict and serve run: exported from the file just written
        from digitlab.inference.predictor import DEFAULT_ONNX

        write_onnx(load_checkpoint(path), path.with_name(DEFAULT_ONNX), data)
