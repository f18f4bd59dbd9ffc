"""The `digitlab` command line. Each subcommand lives in its own module of this package.

Start-up imports only Typer and the command modules; each command imports torch and the rest of
the package when it runs, so `digitlab --help` and usage errors answer without loading torch.
"""

from __future__ import annotations

import warnings

import click

# Explicit imports: each module registers its commands on `app`.
from digitlab.cli import (  # noqa: F401
    bench,
    data,
    eval,
    experiment,
    export,
    inspect,
    models,
    predict,
    runs,
    serve,
    sweep,
    train,
)
from digitlab.cli.app import app
from digitlab.errors import DigitlabError


def _show_warning(message: Warning | str, category: type, filename: str, lineno: int, file=None, line=None) -> None:
    """A warning for a person at a terminal: one line, without Python's source-line echo."""
    click.echo(f"warning: {message}", err=True)


# Requirements a deployment may leave out (an ONNX deployment runs predict and serve without them):
# a command that needs one says so in one line. Import name -> the package to install.
OPTIONAL_AT_RUN_TIME = {
    "torch": "torch",
    "torchinfo": "torchinfo",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "onnx": "onnx",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning DigitlabError into a one-line message and exit code 2."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    try:
        rc = app(args=argv, prog_name="digitlab", standalone_mode=False)
        # With standalone_mode=False, click returns typer.Exit's code instead of raising it.
        return rc if isinstance(rc, int) else 0
    except DigitlabError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.ClickException as exc:  # usage errors: "Usage: ...", "Try 'digitlab train --help'", "Error: ..."
        exc.show()
        return exc.exit_code
    except SystemExit as exc:  # a command's own exit status (predict: 1 when a file failed)
        return int(exc.code or 0)
    except ModuleNotFoundError as exc:
        package = OPTIONAL_AT_RUN_TIME.get((exc.name or "").partition(".")[0])
        if package is None:
            raise
        hint = " (the README's Install gives the CPU-only line)" if package == "torch" else ""
        click.echo(
            f"error: this command needs {package}, which is not installed: pip install {package}{hint}", err=True
        )
        return 2
    except (KeyboardInterrupt, click.Abort):
        click.echo("interrupted", err=True)
        return 130
