"""`digitlab runs` (list run directories) and `digitlab compare` (put runs side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from digitlab.cli.app import app
from digitlab.cli.output import Console
from digitlab.cli.output import Table as RichTable
from digitlab.evaluate.table import Table, plain

if TYPE_CHECKING:
    import rich.console

    from digitlab.experiments.compare import Comparison


# Short headers for the terminal; CSV and JSON keep the full names.
HEADERS = {"final_acc": "final", "best_acc": "best", "seconds": "time", "params": "parameters"}
NUMERIC = {"seconds", "params", "epochs", "lr", "batch_size", "width", "seed"}


def print_table(table: Table, console: rich.console.Console | None = None) -> None:
    """A results Table as a rich table on the terminal (in a log, as wide as it needs: cli.output)."""
    console = console or Console()
    rich = RichTable(title=table.title or None)
    for c in table.columns:
        numeric = c in NUMERIC or table.formats[c] is not plain  # accuracies, times, counts
        rich.add_column(
            HEADERS.get(c, c), justify="right" if numeric else "left", style="bold cyan" if c == "name" else None
        )
    for cells in table.cells():
        rich.add_row(*cells)
    console.print(rich)


@app.command("runs")
def runs_cmd(
    folder: Path = typer.Argument(Path("runs"), help="Folder of run directories (sweep folders inside are searched)."),
    csv: str | None = typer.Option(None, help="Also write the list as CSV to this file ('-': print it instead)."),
    json_path: str | None = typer.Option(
        None, "--json", help="Also write the list as JSON to this file ('-': print it instead)."
    ),
) -> None:
    """List runs: dataset, model, preset, epochs, final and best accuracy, time, and whether each finished."""
    from digitlab.experiments.runs import find_runs, runs_table

    runs, skipped = find_runs(folder)
    table = runs_table(runs)
    for row, run in zip(table.rows, runs, strict=True):
        row["name"] = str(run.path.relative_to(folder)) if run.path != folder else run.name
    console = Console()
    if not write_outputs(table, csv, json_path):
        if runs:
            print_table(table, console)
        else:
            console.print(f"no runs in {folder}", highlight=False)
    for path, why in skipped:
        Console(stderr=True).print(f"skipped {path}: {why}", highlight=False, soft_wrap=True)


def write_outputs(result: Table | Comparison, csv: str | None, json_path: str | None) -> bool:
    """Write the ``--csv``/``--json`` files; True when one went to stdout ('-'), so the table is not printed."""
    to_stdout = False
    for target, render in ((csv, result.to_csv), (json_path, result.to_json)):
        if target == "-":
            print(render(), end="")
            to_stdout = True
        elif target is not None:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            render(target)
            Console(stderr=True).print(f"wrote {target}", highlight=False)
    return to_stdout


@app.command("compare")
def compare_cmd(
    runs: list[Path] = typer.Argument(..., help="Run directories, or folders of runs (a sweep's folder)."),
    out: Path = typer.Option(Path("."), help="Folder for compare.png."),
    csv: str | None = typer.Option(None, help="Also write the table as CSV to this file ('-': print it instead)."),
    json_path: str | None = typer.Option(
        None, "--json", help="Also write the comparison as JSON to this file ('-': print it instead)."
    ),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write compare.png (overlaid loss and accuracy)."),
) -> None:
    """Runs side by side: the config fields that differ, parameters, final and best accuracy, time;
    mean ± spread over seeds for configurations run with several; overlaid curves in compare.png."""
    from digitlab.experiments.compare import collect, compare_runs

    comparison = compare_runs(collect(list(runs)))
    console = Console()
    if not write_outputs(comparison, csv, json_path):
        print_table(comparison.table, console)
        if comparison.over_seeds is not None:
            print_table(comparison.over_seeds, console)
    if plot:
        png = out / "compare.png"
        comparison.plot(png)
        Console(stderr=True).print(f"wrote {png}", highlight=False)
