"""`digitlab data show | info | download`: look at a dataset, describe it, fetch it."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from digitlab.cli.app import app
from digitlab.cli.output import Console, Table
from digitlab.errors import DigitlabError

data_app = typer.Typer(help="Datasets: show samples, describe, download.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DATASET_HELP = "mnist, fashion-mnist, cifar10, digits, usps, optdigits, or a path to an image folder"
DATA_DIR_HELP = "Where the files are (default: $DIGITLAB_DATA, then the user cache directory)."


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", Path(name).name or name).strip("-") or "dataset"


@data_app.command("show")
def show(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    out: Path | None = typer.Option(None, "--out", help="PNG to write (default: <dataset>-<split>.png)."),
    count: int = typer.Option(20, "--count", min=1, max=400, help="How many images."),
    split: str = typer.Option("train", "--split", help="train or test."),
    seed: int | None = typer.Option(None, "--seed", help="Random images with this seed (default: the first)."),
    download: bool = typer.Option(True, "--download/--no-download", help="Fetch missing files."),
) -> None:
    """Save a labelled grid of sample images."""
    import torch

    from digitlab.data import load_dataset
    from digitlab.evaluate.grid import save_image_grid

    if split not in ("train", "test"):
        raise DigitlabError(f"--split must be train or test, not {split!r}")
    data = load_dataset(dataset, data_dir, download=download)
    x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
    if not x.shape[0]:
        raise DigitlabError(f"{data.name} has no {split} split here (found: {data.source})")
    n = min(count, x.shape[0])
    if seed is None:
        idx = torch.arange(n)
    else:
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    titles = [data.classes[int(label)] for label in y[idx]]
    out = out or Path(f"{_slug(data.name)}-{split}.png")
    path = save_image_grid(x[idx], titles, out, ncols=10, title=f"{data.label} ({split}, {n} of {x.shape[0]})")
    Console().print(f"wrote {path}")


@data_app.command("info")
def info(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    download: bool = typer.Option(True, "--download/--no-download", help="Fetch missing files."),
) -> None:
    """Print sizes, classes, normalisation and where the files were found."""
    from digitlab.data import load_dataset
    from digitlab.data.loader import default_augment
    from digitlab.engine.presets import DATASET_DEFAULTS

    data = load_dataset(dataset, data_dir, download=download)
    table = Table(title=data.label, show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    c, s = data.channels, data.image_size
    table.add_row("files", data.source or "?")
    if data.note:
        table.add_row("copy", f"{data.note}: pixels differ slightly from the official files; results say so")
    table.add_row("train", f"{data.train_x.shape[0]:,} images")
    table.add_row("test", f"{data.test_x.shape[0]:,} images")
    table.add_row("image", f"{c} x {s} x {s} uint8 ({'gray' if c == 1 else 'RGB'})")
    table.add_row("classes", f"{data.num_classes}: {', '.join(data.classes)}")
    table.add_row("mean", ", ".join(f"{m:.4f}" for m in data.mean))
    table.add_row("std", ", ".join(f"{v:.4f}" for v in data.std))
    table.add_row("augment", f"{default_augment(data.name)} (default)")
    if data.name in DATASET_DEFAULTS:
        own = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in DATASET_DEFAULTS[data.name].items())
        table.add_row("training", f"{own} (its own defaults, without a preset)")
    counts = data.train_y.bincount(minlength=data.num_classes).tolist()
    table.add_row("per class", " ".join(str(k) for k in counts) + " (train)")
    if data.skipped:
        table.add_row("skipped", f"{len(data.skipped)} unreadable files, e.g. {data.skipped[0]}")
    Console().print(table)


@data_app.command("download")
def download(
    dataset: str = typer.Argument(..., help="mnist, fashion-mnist, cifar10, usps or optdigits"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Download into this folder (default: cache)."),
) -> None:
    """Fetch a dataset's files from the official mirrors (md5-checked)."""
    from digitlab.data import canonical_name, list_datasets
    from digitlab.data.download import download_dataset
    from digitlab.data.locate import (
        TEXT_FILES,
        download_dir,
        find_cifar10,
        find_idx_files,
        find_text_files,
        missing_message,
    )
    from digitlab.errors import unknown_name

    console = Console()
    name = canonical_name(dataset)
    if name is None:
        raise unknown_name("dataset", dataset, list_datasets())
    if name == "digits":
        console.print("digits is bundled with scikit-learn: nothing to download")
        return
    found: Path | dict[str, Path] | None  # a folder (CIFAR-10) or the files by role (IDX, text)
    if name in TEXT_FILES:
        found = find_text_files(name, TEXT_FILES[name], [], data_dir)
    else:
        found = find_cifar10(data_dir) if name == "cifar10" else find_idx_files(name, data_dir)
    if found is not None:
        where = found if isinstance(found, Path) else next(iter(found.values())).parent
        console.print(f"{name} is already at {where}")
        return
    dest = download_dir(name, data_dir)
    try:
        paths = download_dataset(name, dest)
    except DigitlabError as exc:
        raise DigitlabError(f"{exc}\n{missing_message(name, data_dir)}") from exc
    for p in paths:
        console.print(f"wrote {p}")
