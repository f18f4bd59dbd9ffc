"""`digitlab experiment permuted`: seed 002's fully-connected vs CNN comparison on shuffled pixels."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from digitlab.cli.app import app
from digitlab.cli.output import Console

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
    seeds: str = typer.Option(
        "0", help="Seeds, e.g. 0,1,2: each seeds a permutation, initial weights and batch order; mean ± std over them."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N, mps."),
    out: Path = typer.Option(
        Path("runs/permuted"), help="Folder for permuted.json, permuted.png and permuted_samples.png."
    ),
) -> None:
    """Train mlp and cnn-small (equal parameter counts) on normal and pixel-shuffled images."""
    from digitlab.cli.runs import print_table
    from digitlab.data import load_dataset
    from digitlab.errors import DigitlabError
    from digitlab.evaluate.grid import image_grid
    from digitlab.evaluate.plots import plot_bars
    from digitlab.experiments.permuted import permuted_table, run_permuted_seeds, shuffled_examples

    try:
        seed_list = list(dict.fromkeys(int(s) for s in seeds.split(",")))
    except ValueError:
        raise DigitlabError(f"--seeds {seeds!r} is not a comma-separated list of integers") from None
    console = Console()
    data = load_dataset(dataset, data_dir, download=download)
    if limit_train or limit_test:
        data = data.subset(limit_train, limit_test)
    console.print(
        f"{data.name}: {data.train_x.shape[0]} train, {data.test_x.shape[0]} test images; "
        f"{4 * len(seed_list)} runs of {epochs} epoch(s)",
        highlight=False,
    )
    result = run_permuted_seeds(data, epochs=epochs, seeds=seed_list, device=device)
    print_table(permuted_table(result), console)

    out.mkdir(parents=True, exist_ok=True)
    (out / "permuted.json").write_text(json.dumps(result, indent=2) + "\n")
    several = len(seed_list) > 1
    plot_bars(
        result["table"],
        out / "permuted.png",
        title=f"{data.name}: fully-connected vs CNN on normal and shuffled pixels"
        + (f" (mean ± std over {len(seed_list)} seeds)" if several else ""),
        errors=result["std"] if several else None,
    )
    images, titles = shuffled_examples(data, seed_list[0])
    image_grid(
        images,
        titles,
        out / "permuted_samples.png",
        ncols=len(titles) // 2,
        title="the same pixel order for every image",
    )
    console.print(f"wrote permuted.json, permuted.png and permuted_samples.png to {out}", highlight=False)
