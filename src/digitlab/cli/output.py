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
import sys
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
    """A module-level console made (by ``Console``) on first use, so importing a command module
    imports no Rich. It is one console while sys.stdout/sys.stderr stay the same (Rich's live displays
    keep state on it), and a new one when they change (tests capture output by swapping them).
    For printing; Rich's own machinery (a progress display) takes a real ``Console()``."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._made: tuple[object, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        stream = sys.stderr if self._stderr else sys.stdout
        if self._made is None or self._made[0] is not stream:
            self._made = (stream, Console(stderr=self._stderr))
        return getattr(self._made[1], name)


console: Any = _LazyConsole(stderr=False)
err_console: Any = _LazyConsole(stderr=True)
