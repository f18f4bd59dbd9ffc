"""What a run shows while it trains: progress bars, per-epoch lines, and (``--log-every``) step lines."""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from digitlab.errors import DigitlabError

STEP_FIELDS = ("step", "epoch", "loss", "lr", "images_per_s")


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


def check_tensorboard() -> None:
    """Refuse ``--tensorboard`` before any work when the ``tensorboard`` package is not installed."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise DigitlabError(
            "--tensorboard needs the tensorboard package: pip install 'digitlab[tensorboard]' (or tensorboard)"
        )


def tensorboard_writer(log_dir: Path):
    """TensorBoard's ``SummaryWriter`` (torch's, which needs only the ``tensorboard`` package, not TensorFlow)."""
    check_tensorboard()
    from torch.utils.tensorboard import SummaryWriter  # lazy: an optional dependency, imported only when used

    return SummaryWriter(log_dir=str(log_dir))


class StepLog:
    """Every ``every`` steps: a line (step, epoch, loss, lr, images/s) on the console and a row in
    ``steps.csv``; with a TensorBoard writer, the same scalars and each epoch's too.

    Reading a step's loss waits for the device, so it happens only on logged steps.
    """

    def __init__(
        self, every: int, steps_per_epoch: int, csv_file, writer, console: Console, quiet: bool, start: int
    ) -> None:
        self.every, self.steps_per_epoch = every, steps_per_epoch
        self._csv, self._writer, self.console, self.quiet = csv_file, writer, console, quiet
        self._t0, self._images, self._last = time.perf_counter(), 0, start

    @classmethod
    def open(
        cls, run_dir: Path, every: int, steps_per_epoch: int, start: int, *, tensorboard: bool, console, quiet
    ) -> StepLog:
        """Open ``run_dir/steps.csv`` (kept up to step ``start`` when resuming) and the TensorBoard writer."""
        writer = tensorboard_writer(run_dir / "tensorboard") if tensorboard else None
        csv_file = None
        if every:
            path = run_dir / "steps.csv"
            kept = _rows_up_to(path, start)
            csv_file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed by close())
            w = csv.writer(csv_file)
            w.writerow(STEP_FIELDS)
            w.writerows(kept)
            csv_file.flush()
        return cls(every, steps_per_epoch, csv_file, writer, console, quiet, start)

    def row(self, step: int, loss: torch.Tensor, lr: float, images: int) -> None:
        """Count ``images`` trained at ``step``; every ``every`` steps, report the step."""
        self._images += images
        if not self.every or step % self.every:
            return
        now = time.perf_counter()
        loss_value = float(loss)  # the one device sync, on logged steps only
        rate = self._images / max(now - self._t0, 1e-9)
        self._t0, self._images = now, 0
        epoch = (step - 1) // self.steps_per_epoch + 1
        if self._csv is not None:
            csv.writer(self._csv).writerow([step, epoch, f"{loss_value:.6g}", f"{lr:.6g}", f"{rate:.1f}"])
            self._csv.flush()
        if self._writer is not None:
            self._writer.add_scalar("train/loss", loss_value, step)
            self._writer.add_scalar("train/lr", lr, step)
            self._writer.add_scalar("train/images_per_s", rate, step)
        if not self.quiet:
            self.console.print(
                f"step {step:>6}  epoch {epoch:>3}  loss {loss_value:.4f}  lr {lr:.4g}  {rate:,.0f} images/s",
                highlight=False,
            )

    def epoch(self, row: dict) -> None:
        """An epoch ended: its scalars to TensorBoard; the next rate excludes the evaluation and saving."""
        if self._writer is not None:
            for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
                if row.get(key) is not None:
                    self._writer.add_scalar(f"epoch/{key}", row[key], row["step"])
            self._writer.flush()
        self._t0, self._images = time.perf_counter(), 0

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _rows_up_to(path: Path, step: int) -> list[list[str]]:
    """steps.csv's rows up to ``step``: a resumed run drops what the interrupted epoch had logged."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return [r for r in rows if len(r) == len(STEP_FIELDS) and r[0].isdigit() and int(r[0]) <= step]
