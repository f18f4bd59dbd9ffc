"""The `digitlab` command line. Each subcommand lives in its own module of this package."""

from __future__ import annotations

from rich.console import Console

# Explicit imports: each module registers its commands on `app`.
from digitlab.cli import (  # noqa: E402,F401
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning DigitlabError into a one-line message and exit code 2.

    Click's exceptions are recognised by class name: typer 0.29 stopped using the ``click``
    package and raises its own copies (``typer._click``), which ``click``'s classes do not match.
    """
    try:
        rc = app(args=argv, prog_name="digitlab", standalone_mode=False)
        # With standalone_mode=False, click returns typer.Exit's code instead of raising it.
        return rc if isinstance(rc, int) else 0
    except DigitlabError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130
    except SystemExit as exc:  # typer.Exit inside commands
        return int(exc.code or 0)
    except Exception as exc:  # usage errors (bad option, missing argument), Exit and Abort
        kinds = {cls.__name__ for cls in type(exc).__mro__}
        if "ClickException" in kinds:
            exc.show()  # "Usage: ...", "Try 'digitlab train --help'", "Error: No such option: --x"
            return exc.exit_code
        if "Exit" in kinds:
            return int(getattr(exc, "exit_code", 0) or 0)
        if "Abort" in kinds:
            return 130
        raise
