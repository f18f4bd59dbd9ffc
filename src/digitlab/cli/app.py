"""The Typer application object every command module registers on.

Help is click's classic plain text (``rich_markup_mode=None``): it reads the same in a terminal,
a pipe and a log, and it does not import Rich's help renderer at start-up.
"""

from __future__ import annotations

import click
import typer
from typer.core import TyperGroup

# `digitlab --help` lists commands in the order of the work: look at data, pick a model, train it,
# evaluate, use it, ship it, measure it. Commands not named here follow in registration order.
WORKFLOW = [
    "data",
    "models",
    "summary",
    "inspect",
    "train",
    "eval",
    "predict",
    "serve",
    "export",
    "bench",
    "experiment",
]


class WorkflowGroup(TyperGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = list(self.commands)
        return [n for n in WORKFLOW if n in names] + [n for n in names if n not in WORKFLOW]


app = typer.Typer(
    name="digitlab",
    cls=WorkflowGroup,
    help="Handwritten-digit and small-image recognition: data, models, train, eval, predict, serve, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)


def _print_version(value: bool) -> None:
    if value:
        import digitlab

        print(f"digitlab {digitlab.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
    ),
) -> None:
    """Handwritten-digit and small-image recognition: data, models, train, eval, predict, serve, bench."""
