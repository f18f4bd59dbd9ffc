"""`digitlab sweep`: train over a grid or a random/TPE search of flags and seeds, then compare."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import typer

from digitlab.cli.app import app
from digitlab.cli.output import Console

EPILOG = """Examples:

  digitlab sweep --grid lr=0.05,0.1,0.2 --grid epochs=1,2 --seeds 0,1 -- --dataset digits

  digitlab sweep --search tpe --trials 20 --range lr=0.01:0.5:log --grid batch-size=32,64 -- --dataset digits

Run the same command again (same --name) to continue an interrupted sweep."""


@app.command("sweep", epilog=EPILOG)
def sweep_cmd(
    train_args: list[str] | None = typer.Argument(
        None, help="Training flags for every run, after `--` (e.g. -- --dataset digits --model lenet5)."
    ),
    grid: list[str] = typer.Option([], "--grid", help="KEY=A,B,C: values of a train option (repeatable)."),
    ranges: list[str] = typer.Option(
        [], "--range", help="KEY=LOW:HIGH or KEY=LOW:HIGH:log: a numeric range for random/tpe (repeatable)."
    ),
    seeds: str = typer.Option("0", help="Seeds every configuration is trained with, e.g. 0,1,2."),
    search: str | None = typer.Option(
        None, help="grid (default with only --grid), random or tpe (default with --range)."
    ),
    trials: int | None = typer.Option(None, help="random/tpe: configurations to try in all (default 10)."),
    jobs: int = typer.Option(1, min=1, help="Runs trained at the same time (each gets cores/jobs threads)."),
    name: str | None = typer.Option(None, help="The sweep's folder name under --runs-dir (default: a timestamp)."),
    runs_dir: Path = typer.Option(Path("runs"), help="Parent of the sweep's folder."),
    sampler_seed: int = typer.Option(0, help="random/tpe: the sampler's seed."),
) -> None:
    """Train every configuration of a grid (or Optuna's random/TPE proposals) with every seed, each run in its
    own process and run directory; the study is kept in SQLite (study.db) so an interrupted sweep continues;
    ends with the comparison table, mean ± standard deviation over seeds."""
    from digitlab.cli.runs import print_table
    from digitlab.experiments.sweep import parse_spec, run_sweep

    spec = parse_spec(grid, ranges, seeds, search, trials, train_args or [], sampler_seed)
    folder = runs_dir / (name or _dt.datetime.now().strftime("sweep-%Y%m%d-%H%M%S"))
    console = Console()
    n = spec.n_trials()
    console.print(
        f"sweep {folder}: {spec.search}, {n} configuration(s) x {len(spec.seeds)} seed(s), {jobs} at a time",
        highlight=False,
    )
    try:
        result = run_sweep(
            spec, folder, jobs=jobs, log=lambda line: console.print(line, highlight=False, soft_wrap=True)
        )
    except KeyboardInterrupt:
        Console(stderr=True).print(
            "\ninterrupted: the runs kept their last finished epoch; run the same command again to continue the sweep",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(result.states.items()))
    console.print(f"trials: {counts}", highlight=False)
    if result.comparison is None:
        console.print("no run finished", highlight=False)
        raise typer.Exit(1)
    comparison = result.comparison
    comparison.table.rows.sort(key=lambda r: -(r["final_acc"] or 0.0))
    comparison.table.to_csv(folder / "runs.csv")
    comparison.to_json(folder / "compare.json")
    comparison.plot(folder / "compare.png")
    if comparison.over_seeds is not None:
        comparison.over_seeds.to_csv(folder / "summary.csv")
        print_table(comparison.over_seeds, console)
    else:
        print_table(comparison.table, console)
    console.print(f"wrote runs.csv, compare.json and compare.png to {folder}", highlight=False)
    if result.failures:
        raise typer.Exit(1)
