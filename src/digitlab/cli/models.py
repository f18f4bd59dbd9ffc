"""`digitlab models` (the registry as a table) and `digitlab summary MODEL` (layer by layer)."""

from __future__ import annotations

import inspect
import re

import typer

from digitlab.cli.app import app
from digitlab.cli.output import Console, Table
from digitlab.errors import DigitlabError, unknown_name

# Input shapes for `summary --dataset`, so the summary needs no dataset files: (channels, size).
DATASET_SHAPES = {"mnist": (1, 28), "fashion-mnist": (1, 28), "cifar10": (3, 32), "digits": (1, 8)}


def natural_shape(fn) -> tuple[int, int]:
    """(channels, image size) a constructor defaults to: MNIST for digit models, CIFAR for cifar-net/vgg."""
    params = inspect.signature(fn).parameters
    return params["in_channels"].default, params["image_size"].default


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@app.command("models")
def models_cmd() -> None:
    """List the registered models and their sizes.

    Parameter counts are at each model's natural input size (28x28 gray, or 32x32 RGB for CIFAR models).
    """
    from digitlab.models import list_models  # torch: imported when a command runs, not for --help

    table = Table(title="digitlab models")
    table.add_column("name", style="bold cyan")
    table.add_column("description")
    table.add_column("input", justify="right")
    table.add_column("parameters", justify="right")
    for info in list_models():
        c, s = natural_shape(info.fn)
        table.add_row(info.name, info.description, f"{c}x{s}x{s}", f"{count_params(info.fn()):,}")
    from digitlab.models.registry import SEED_TUTORIALS

    Console().print(table)
    print("seed NNN: one of the five tutorials digitlab started from, whose network the model is:")
    for seed, what in SEED_TUTORIALS.items():
        print(f"  seed {seed}: {what}")
    print("Your own network: --model package.module:ClassName (num_classes, in_channels, image_size arguments)")


@app.command("summary")
def summary_cmd(
    model: str = typer.Argument(..., help="registry name (see `digitlab models`) or package.module:ClassName"),
    dataset: str = typer.Option("mnist", help="input shape of this dataset: mnist, fashion-mnist, cifar10, digits"),
    channels: int | None = typer.Option(None, help="override the input channels"),
    image_size: int | None = typer.Option(None, help="override the (square) input size"),
    num_classes: int = typer.Option(10, help="number of output classes"),
    as_written: bool = typer.Option(
        False,
        "--as-written",
        help="the seed's own layer order (ReLU before each max pool, nn.Dropout), as its tutorial wrote it; "
        "digitlab runs the same function faster (as_the_seed_wrote_it)",
    ),
) -> None:
    """A model's layers: output shapes, parameters, mult-adds.

    Computed by torchinfo on one image of the dataset's shape; no data files are needed.
    """
    from torchinfo import summary  # only this command needs it

    from digitlab.models import create_model

    if dataset not in DATASET_SHAPES:
        raise unknown_name("dataset", dataset, list(DATASET_SHAPES))
    c, s = DATASET_SHAPES[dataset]
    c, s = channels or c, image_size or s
    if c < 1 or s < 1 or num_classes < 1:
        raise DigitlabError("--channels, --image-size and --num-classes must be positive")
    net = create_model(model, num_classes=num_classes, in_channels=c, image_size=s)
    if as_written:
        from digitlab.models.layers import as_the_seed_wrote_it

        net = as_the_seed_wrote_it(net)
    result = summary(
        net,
        input_size=(1, c, s, s),
        col_names=("output_size", "num_params", "mult_adds"),
        verbose=0,
        device="cpu",
    )
    order = ", layers as the seed wrote them" if as_written else ""
    print(f"{model} on {c}x{s}x{s} input, {num_classes} classes{order}")
    # torchinfo 1.8 on Python 3.11 prints its unit enum as "(Units.MEGABYTES)"; show "(M)".
    print(re.sub(r"\(Units\.(\w)\w*\)", r"(\1)", str(result)))
