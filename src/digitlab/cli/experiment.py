"""`digitlab experiment permuted`: seed 002's fully-connected vs CNN comparison on shuffled pixels."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from digitlab.cli.app import app

experiment_app = typer.Typer(help="Experiments from the seed tutorials.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("permuted")
def permuted(
    dataset: str = typer.Option("mnist", help="mnist, fashion-mnist, cifar10, or an image folder (16x16 or larger)."),
    data_dir: str | None = typer.Option(None, help="Where the data files are (default: $DIGITLAB_DATA, the cache)."),
    download: bool = typer.Option(True, "--download/--no-download", help="Fetch missing data files."),
    epochs: int = typer.Option(1, min=1, help="Epochs per run (seed 002: 1)."),
    limit_train: int | None = typer.Option(None, min=1, help="Use only the first N training images."),
    limit_test: int | None = typer.Option(None, min=1, help="Use only the first N test images."),
    seed: int = typer.Option(0, help="Seeds the permutation, initial weights and batch order."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N, mps."),
    out: Path = typer.Option(Path("runs/permuted"), help="Folder for permuted.json and permuted.png."),
) -> None:
    """Train mlp and cnn-small (equal parameter counts) on normal and pixel-shuffled images."""
    from digitlab.data import load_dataset
    from digitlab.evaluate.plots import plot_bars
    from digitlab.experiments.permuted import CONDITIONS, run_permuted

    console = Console()
    data = load_dataset(dataset, data_dir, download=download)
    if limit_train or limit_test:
        data = data.subset(limit_train, limit_test)
    console.print(
        f"{data.name}: {data.train_x.shape[0]} train, {data.test_x.shape[0]} test images; 4 runs of {epochs} epoch(s)",
        highlight=False,
    )
    result = run_permuted(data, epochs=epochs, seed=seed, device=device)

    table = Table(title=f"Test accuracy, {data.name} (seed 002's experiment)")
    table.add_column("model", style="bold cyan")
    table.add_column("parameters", justify="right")
    for cond in CONDITIONS:
        table.add_column(f"{cond} pixels", justify="right")
    for name, row in result["table"].items():
        table.add_row(name, f"{result['params'][name]:,}", *(f"{row[c]:.2%}" for c in CONDITIONS))
    console.print(table)

    out.mkdir(parents=True, exist_ok=True)
    (out / "permuted.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_bars(
        result["table"],
        out / "permuted.png",
        title=f"{data.name}: fully-connected vs CNN on normal and shuffled pixels",
    )
    console.print(f"wrote {out / 'permuted.json'} and {out / 'permuted.png'}", highlight=False)
