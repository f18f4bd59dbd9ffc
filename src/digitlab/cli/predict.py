"""`digitlab predict IMAGE...`: read the digits (or classes) in image files.

Files, folders (searched recursively for images) and glob patterns; the model calls are
batched across files. A file that cannot be read gets its own error line and the others
are still read; the exit code is 1 if any file failed, 0 otherwise.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from digitlab.cli.app import app
from digitlab.cli.output import Console, Table

if TYPE_CHECKING:
    import rich.console

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
GLOB_CHARS = set("*?[")


def expand_inputs(items: list[str]) -> list[str]:
    """Files as given, folders as their images (recursively, sorted), globs as their matches; each file
    once, in the order first named (a folder and a glob that both match a file read it once).

    A path that does not exist and matches nothing is kept, so it is reported as an error.
    """
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif not p.exists() and GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item, recursive=True))
            files = [m for m in matches if Path(m).is_file()]
            for m in matches:
                if Path(m).is_dir():
                    files += expand_inputs([m])
            out += files if files else [item]
        else:
            out.append(item)
    seen: set[str] = set()
    unique = []
    for f in out:  # the same file by two spellings (dir/a.png, dir//a.png, ./dir/a.png) counts once
        key = os.path.normcase(os.path.abspath(f))
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def percent(p: float) -> str:
    """A probability for people: calibrated models are often surer than 99.9%, which is not 100%
    (the web page writes them the same way)."""
    return ">99.9%" if p >= 0.9995 else "<0.1%" if p < 0.0005 else f"{p:.1%}"


def _format_top(items) -> str:
    if len(items) == 1:
        return "  ".join(f"{lab} {percent(p)}" for lab, p in items[0].top_k)
    return "  ".join(f"{it.label} {percent(it.probability)}" for it in items)


def print_table(preds, console: rich.console.Console, model_info: dict) -> None:
    table = Table(title=f"digitlab predict ({model_info['name']}, {model_info['task']})", show_lines=False)
    table.add_column("image", overflow="fold")
    table.add_column("result", style="bold")
    table.add_column("probability", justify="right")
    # A digit model reads numbers digit by digit; any other model gives one class per image.
    table.add_column("top-k / per digit" if model_info["task"] == "digits" else "top-k")
    table.add_column("status")
    for p in preds:
        if p.status == "error":
            table.add_row(p.source, "", "", f"[red]{p.error}[/]", "[bold red]error[/]")
            continue
        if p.status == "empty":
            table.add_row(p.source, "-", "", "no digit found", "[yellow]empty[/]")
            continue
        prob = min(it.probability for it in p.items)  # a number is as sure as its least sure digit
        style = "[yellow]uncertain[/]" if p.status == "uncertain" else "[green]ok[/]"
        table.add_row(p.source, p.text, percent(prob), _format_top(p.items), style)
    console.print(table)


def explain_path(out: Path, index: int, source: str, many: bool) -> Path:
    """OUT.png for one image; OUT_<i>_<name>.png for each of many."""
    if not many:
        return out
    stem = Path(source).stem or "image"
    return out.with_name(f"{out.stem}_{index:03d}_{stem}{out.suffix or '.png'}")


def save_explanation(pred, path: Path, classes: list[str], saliency: list | None = None):
    """The original image (boxes drawn), each 28x28 model input, and its probability bars, side by side;
    with ``saliency`` (one ``(heat map, method)`` or None per item) a row of where the model looked.
    Returns the matplotlib Figure."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from digitlab.inference.image import load_image

    original = load_image(pred.source)
    n = max(1, len(pred.items))
    looks = saliency or []
    rows = 3 if any(s is not None for s in looks) else 2
    fig = Figure(figsize=(2.6 * (n + 1), 2.6 * rows))
    axes = fig.subplots(rows, n + 1, squeeze=False)
    ax = axes[0][0]
    ax.imshow(np.asarray(original.convert("RGB")))
    for it in pred.items:
        if it.box is not None:
            x0, y0, x1, y1 = it.box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", linewidth=1.5))
    ax.set_title(f"{Path(pred.source).name}\n-> {pred.text if pred.text is not None else 'no digit found'}", fontsize=9)
    ax.axis("off")
    for row in axes[1:]:
        row[0].axis("off")
    for k in range(n):
        img_ax, bar_ax = axes[0][k + 1], axes[1][k + 1]
        if k >= len(pred.items):
            for row in axes:
                row[k + 1].axis("off")
            continue
        it = pred.items[k]
        img_ax.imshow(it.input_image, cmap="gray", vmin=0, vmax=255)
        img_ax.set_title(f"model input: {it.label} ({percent(it.probability)})", fontsize=9)
        img_ax.axis("off")
        colors = ["tab:red" if i == it.index else "tab:blue" for i in range(len(it.probs))]
        bar_ax.barh(range(len(it.probs)), it.probs, color=colors)
        bar_ax.set_yticks(range(len(classes)), classes, fontsize=7)
        bar_ax.invert_yaxis()
        bar_ax.set_xlim(0, 1)
        bar_ax.set_xlabel("probability", fontsize=8)
        if rows == 3:
            heat_ax = axes[2][k + 1]
            heat_ax.axis("off")
            if looks[k] is not None:
                heat, method = looks[k]
                heat_ax.imshow(it.input_image, cmap="gray", vmin=0, vmax=255)
                heat_ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
                heat_ax.set_title(f"where it looked ({method})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return fig


@app.command()
def predict(
    images: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) or glob patterns."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="A checkpoint, run folder, or .onnx file (run by onnxruntime) (default: the shipped digit model).",
    ),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many best classes to list."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    single: bool = typer.Option(False, "--single", help="Read all ink as one digit (no multi-digit segmentation)."),
    explain: Path | None = typer.Option(
        None, "--explain", help="Save original, model input(s) and probabilities to this PNG."
    ),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Digits per model call."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N, mps."),
) -> None:
    """Read digits (or classify images) in image files.

    Files, folders (searched recursively) and glob patterns; numbers of several digits are read
    digit by digit unless --single.
    """
    from digitlab.inference.predictor import Predictor

    # --explain's saliency needs gradients: the PyTorch checkpoint, not the shipped model's ONNX twin
    predictor = Predictor.load(model, device=device, runtime="torch" if explain is not None else "auto")
    sources = expand_inputs(images)
    console, err = Console(), Console(stderr=True, soft_wrap=True)  # one line per error, greppable
    if not sources:
        err.print("[bold red]error:[/] no images found")
        raise SystemExit(1)
    preds = predictor.predict_many(sources, top_k=top_k, multi=not single, batch_size=batch_size)
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in preds], indent=2))
    else:
        print_table(preds, console, predictor.info)
    failed = [p for p in preds if p.status == "error"]
    for p in failed:
        err.print(f"[bold red]error:[/] {p.error}", highlight=False)
    if explain is not None:
        for i, p in enumerate(preds):
            if p.status == "error":
                continue
            path = explain_path(explain, i, p.source, many=len(preds) > 1)
            from digitlab.evaluate.inspect import item_saliency  # only --explain needs gradients

            looked = [
                item_saliency(predictor, it.input_image, it.index) if it.input_image is not None else None
                for it in p.items
            ]
            save_explanation(p, path, predictor.classes, looked)
            if not as_json:
                console.print(f"explanation: {path}")
    if failed:
        # SystemExit, not typer.Exit: under standalone_mode=False click turns typer.Exit
        # into a return value that digitlab.cli.main does not pass on.
        raise SystemExit(1)
