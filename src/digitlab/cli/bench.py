"""`digitlab bench`: measure time to accuracy, throughput, latency and memory on this machine."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from digitlab.cli.app import app
from digitlab.cli.output import Table, console

if TYPE_CHECKING:
    import rich.table


def _fmt(s: dict | None, unit: str = "", digits: int = 1) -> str:
    """'median (min-max)' of a spread dict."""
    if s is None:
        return "not reached"
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


QUICK_CAPTION = "--quick: a smoke run (a subset, a few batches, 1 repeat); its numbers are not measurements"


def render(result: dict) -> rich.table.Table:
    """The bench result as one Rich table: medians with the min-max spread."""
    table = Table(
        title=f"digitlab bench ({'quick, ' if result['quick'] else ''}{result['repeats']} repeats, "
        f"{result['provenance']['cpu']}, {result['provenance']['torch_threads']} threads)",
        # --quick trains a few batches of a subset: its accuracy says the pipeline runs, not how well it learns
        caption=QUICK_CAPTION if result["quick"] else None,
    )
    table.add_column("measure")
    table.add_column("median (min-max)", justify="right")
    for preset, r in result["time_to_accuracy"].items():
        table.add_row(
            f"{preset}: final test accuracy" + (" (smoke run, not a result)" if result["quick"] else ""),
            _fmt({k: 100 * v for k, v in r["final_acc"].items() if k != "values"}, "%", 2),
        )
        table.add_row(f"{preset}: train seconds", _fmt(r["train_seconds"], " s"))
        if r.get("compile"):
            table.add_row(f"{preset}: compile seconds (before the clock)", _fmt(r["compile_seconds"], " s"))
        for t in ("0.990", "0.995"):
            table.add_row(
                f"{preset}: time to {100 * float(t):.1f}% ({r[f'reached_{t}']}/{len(r['runs'])} runs)",
                _fmt(r[f"time_to_{t}"], " s"),
            )
    cw = result["command_wall"]
    table.add_row("`digitlab train` wall time", _fmt(cw["wall_seconds"], " s"))
    table.add_row("`digitlab train` peak RSS", _fmt(cw["peak_rss_mb"], " MB", 0))
    if "command_wall_compile" in result:
        table.add_row(
            "`digitlab train --compile` wall time (cold cache)",
            _fmt(result["command_wall_compile"]["wall_seconds"], " s"),
        )
    for name, r in result["throughput"].items():
        table.add_row(f"{name}: reference img/s", _fmt(r["reference"], "", 0))
        for path in ("fp32", "bf16", "compiled"):
            if r.get(f"digitlab_{path}") is not None:
                label = f"compiled {r['compiled_precision']}" if path == "compiled" else path
                table.add_row(
                    f"{name}: digitlab {label} img/s (x{r[f'ratio_{path}']:.2f})", _fmt(r[f"digitlab_{path}"], "", 0)
                )
        if r.get("bf16_skipped"):
            table.add_row(f"{name}: digitlab bf16", "skipped: no native bf16 on this CPU")
        if r.get("compile_seconds") is not None:
            table.add_row(f"{name}: compile seconds", f"{r['compile_seconds']:.1f} s")
    inf = result["inference"]
    for p, s in inf["batch_1000_images_per_s"].items():
        table.add_row(f"{inf['model']} inference batch 1000 {p} img/s", _fmt(s, "", 0))
    lat = inf["single_image_ms"]
    table.add_row(f"{inf['model']} single image p50 / p99", f"{lat['p50']:.2f} / {lat['p99']:.2f} ms")
    if "cifar10" in result:
        add_cifar_rows(table, result["cifar10"])
    return table


def add_cifar_rows(table: rich.table.Table, c: dict) -> None:
    """``bench --cifar``'s rows: the load, then each preset's accuracy, seconds and times to 90/93/94%."""
    table.add_row(f"{c['dataset']}: load (before the clock)", f"{c['load_seconds']:.2f} s")
    for preset, r in c["presets"].items():
        table.add_row(
            f"{preset} on CIFAR-10: final test accuracy",
            _fmt({k: 100 * v for k, v in r["final_acc"].items() if k != "values"}, "%", 2),
        )
        table.add_row(f"{preset} on CIFAR-10: train seconds", _fmt(r["train_seconds"], " s"))
        for t in sorted(k[len("reached_") :] for k in r if k.startswith("reached_")):
            table.add_row(
                f"{preset}: time to {100 * float(t):.0f}% ({r[f'reached_{t}']}/{len(r['runs'])} runs)",
                _fmt(r[f"time_to_{t}"], " s"),
            )


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="A tiny smoke run (subset, few batches, 1 repeat) for CI."),
    repeats: int = typer.Option(3, min=1, help="Repetitions of each measurement; medians and spread are reported."),
    out: str = typer.Option("bench", "--out", help="Directory for bench.json."),
    data_dir: str | None = typer.Option(
        None, help="Where the MNIST files are (default: $DIGITLAB_DATA, then the cache)."
    ),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    compile: bool | None = typer.Option(
        None, "--compile/--no-compile", help="Also measure torch.compile (default: yes, except with --quick)."
    ),
    cifar: bool = typer.Option(
        False,
        "--cifar",
        help="Also CIFAR-10's time to 90/93/94% with --preset cifar-fast-cpu and cifar-fast (tens of minutes on a CPU).",
    ),
) -> None:
    """Time to accuracy, throughput, latency and memory.

    Time to 99.0% and 99.5% MNIST test accuracy, training throughput against a seed-style loop,
    inference latency and peak memory, on this machine.
    """
    from digitlab.bench import run_bench

    result = run_bench(
        quick=quick,
        repeats=repeats,
        out_dir=out,
        data_dir=data_dir,
        device=device,
        compile=compile,
        cifar=cifar,
        argv=sys.argv[1:],
        log=lambda m: console.print(f"[dim]{m}[/]"),
    )
    console.print(render(result))
    console.print(f"written {out}/bench.json", highlight=False)
