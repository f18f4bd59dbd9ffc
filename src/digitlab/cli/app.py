"""The Typer application object every command module registers on."""

import typer

app = typer.Typer(
    name="digitlab",
    help="Handwritten-digit and small-image recognition: data, models, train, eval, predict, serve, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
