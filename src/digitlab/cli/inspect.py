"""`digitlab inspect RUN`: draw what a trained network learned (its kernels, one image's feature maps)."""

from __future__ import annotations

from pathlib import Path

import typer

from digitlab.cli.app import app


@app.command("inspect")
def inspect_cmd(
    checkpoint: str = typer.Argument(..., help="A checkpoint file or a run directory (its best.pt)."),
    filters: bool = typer.Option(False, "--filters", help="Draw each conv layer's kernels (filters.png)."),
    feature_maps: Path | None = typer.Option(
        None,
        "--feature-maps",
        help="Draw this image's conv outputs layer by layer, after the same preprocessing as predict "
        "(feature_maps.png).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the PNGs (default: the run directory, or the current folder for a file)."
    ),
    max_maps: int = typer.Option(16, "--max-maps", min=1, help="Feature maps drawn per layer, the most active first."),
) -> None:
    """Draw a trained network's conv kernels (--filters) and one image's feature maps (--feature-maps IMAGE)."""
    # Imported here, not at the top: `digitlab --help` must not load torch and matplotlib.
    from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from digitlab.errors import DigitlabError
    from digitlab.evaluate.inspect import feature_maps_figure, filters_figure, model_input
    from digitlab.inference.predictor import Predictor

    if not filters and feature_maps is None:
        raise DigitlabError("say what to draw: --filters, --feature-maps IMAGE, or both")
    if checkpoint.lower().endswith(".onnx"):
        raise DigitlabError("inspect reads a PyTorch checkpoint (best.pt or its run folder), not an ONNX file")
    folder = out if out is not None else Path(checkpoint) if Path(checkpoint).is_dir() else Path.cwd()
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)  # the trained layers as they are (the predictor's copy has BatchNorm folded)
    name = ckpt["model_name"]
    if filters:
        path = folder / "filters.png"
        filters_figure(model, path)
        print(f"kernels of {name}: {path}")
    if feature_maps is not None:
        predictor = Predictor(model, ckpt)
        x, image, answer = model_input(predictor, feature_maps)
        path = folder / "feature_maps.png"
        title = f"{feature_maps.name}: {name} reads {answer}"
        feature_maps_figure(model, x, image, path, max_maps=max_maps, title=title)
        print(f"feature maps of {feature_maps}: {path}")
