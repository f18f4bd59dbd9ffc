"""Rich consoles and tables for the commands, made when a command prints, not when the CLI starts.

Two reasons for one place:
- start-up: importing Rich costs about a fifth of `digitlab --help`'s time, and only a command
  that prints a table or colours needs it, so ``Console`` and ``Table`` import it on first call;
- logs: piped or in CI, Rich would wrap every line at 80 columns, mid-phrase. When the output is
  not a terminal, text is not wrapped (``soft_wrap``) and tables get the width they need
  (``$COLUMNS`` if set, else wide), so a log holds the lines as printed.

Use ``Console(...)``/``Table(...)`` as Rich's own, and ``console``/``err_console`` at module level.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import rich.console
    import rich.table

# Tables in logs: wide enough for any digitlab table, so none folds; text is not padded to it.
LOG_WIDTH = 200


def Console(stderr: bool = False, **kwargs: Any) -> rich.console.Console:  # noqa: N802 (a drop-in for Rich's class)
    """A Rich console; not on a terminal, one that does not wrap (unless ``width``/``soft_wrap`` are given)."""
    from rich.console import Console as RichConsole

    console = RichConsole(stderr=stderr, **kwargs)
    if console.is_terminal or "width" in kwargs:
        return console
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and int(columns) > 0 else LOG_WIDTH
    return RichConsole(stderr=stderr, **({"width": width, "soft_wrap": True} | kwargs))


def Table(*args: Any, **kwargs: Any) -> rich.table.Table:  # noqa: N802 (a drop-in for Rich's class)
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)


class _LazyConsole:
    """A module-level console that is made (by ``Console``) each time it is used, so importing a
    command module imports no Rich, and each print sees the current stdout (tests capture it)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr

    def __getattr__(self, name: str) -> Any:
        return getattr(Console(stderr=self._stderr), name)


console: Any = _LazyConsole(stderr=False)
err_console: Any = _LazyConsole(stderr=True)
