"""What a run shows and leaves behind: the run directory, progress bars, per-epoch lines, final report."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from digitlab.config import RunConfig
from digitlab.errors import DigitlabError
from digitlab.provenance import provenance


def prepare_run_dir(cfg: RunConfig, resuming: bool, is_main: bool) -> Path:
    """Create ``runs/<name>/`` and write the resolved config with its provenance.

    An existing run is never overwritten: continuing it is what ``--resume`` is for.
    """
    if cfg.name is None:
        cfg.name = _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{cfg.model.model}"
    run_dir = Path(cfg.runs_dir) / cfg.name
    if is_main:
        if not resuming and (run_dir / "last.pt").exists():
            raise DigitlabError(
                f"run directory {run_dir} already holds a run; continue it with "
                f"`digitlab train --resume {run_dir}` or choose another --name"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps({**cfg.to_dict(), "provenance": provenance()}, indent=2))
    return run_dir


class EpochPrinter:
    """A progress bar per epoch and one line per finished epoch (both silent when quiet)."""

    def __init__(self, n_train: int, quiet: bool, console: Console | None = None):
        self.n_train, self.quiet = n_train, quiet
        self.console = console or Console()

    @contextlib.contextmanager
    def epoch(self, epoch: int, epochs: int) -> Iterator[_Advance | None]:
        if self.quiet:
            yield None
            return
        with Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        ) as bar:
            task = bar.add_task("train", total=self.n_train)
            yield _Advance(bar, task)

    def row(self, r: dict) -> None:
        if self.quiet:
            return
        test = f"test loss {r['test_loss']:.4f} acc {r['test_acc']:.2%}" if r["test_acc"] is not None else "test -"
        self.console.print(
            f"epoch {r['epoch']:>3}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.2%}  "
            f"{test}  {r['train_time']:.1f}s (+{r['eval_time']:.1f}s eval)  total {r['elapsed']:.1f}s",
            highlight=False,
        )


class _Advance:
    def __init__(self, bar: Progress, task) -> None:
        self.bar, self.task = bar, task

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)


def finish_run(run_dir: Path, history: list[dict], data, last_eval, console: Console, quiet: bool) -> dict:
    """Curves, confusion matrix, error grid and classification report for the final model."""
    from digitlab.evaluate.plots import plot_curves
    from digitlab.evaluate.report import format_report, write_report

    plot_curves(history, run_dir / "curves.png")
    probs = last_eval.logits.softmax(1)
    meta = {
        "checkpoint": str(run_dir / "last.pt"),
        "dataset": data.name,
        "epoch": history[-1]["epoch"] if history else None,
        "loss": last_eval.loss,
    }
    metrics = write_report(run_dir, data.test_y.cpu(), probs, data.classes, data.test_x.cpu(), meta=meta)
    if not quiet:
        console.print(format_report(metrics), highlight=False)
    return metrics
