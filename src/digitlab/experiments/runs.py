"""Reading run directories back: what `digitlab runs` lists and `digitlab compare` compares.

A run directory is what ``digitlab train`` leaves: ``config.json`` (written first),
``metrics.csv`` (one row per finished epoch, rewritten whole after each, the last one after the
final evaluation), ``last.pt`` and ``best.pt``, and the evaluation outputs. So ``metrics.csv``
says how far a run got: not there yet, some epochs, or all of them. Anything else under a runs folder
(a half-copied run, a folder of notes) is skipped with the reason, never a traceback.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from digitlab.errors import DigitlabError
from digitlab.evaluate.table import Table

# A run whose files changed this recently, and that has not reached its last epoch, is taken to be
# still training: an epoch's files are rewritten at its end, so "recent" is measured in epochs.
RUNNING_EPOCHS = 3.0
RUNNING_MIN_SECONDS = 120.0


@dataclass
class RunInfo:
    """One run directory as its files describe it."""

    path: Path
    config: dict  # config.json: the resolved RunConfig (data, model, train, name, preset) and provenance
    history: list[dict] = field(default_factory=list)  # metrics.csv rows, numbers parsed
    status: str = "interrupted"  # finished, interrupted or running
    params: int | None = None  # trainable parameters, from the checkpoint (None: no checkpoint yet)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def dataset(self) -> str:
        return str(self.config.get("data", {}).get("dataset", "?"))

    @property
    def model(self) -> str:
        return str(self.config.get("model", {}).get("model", "?"))

    @property
    def preset(self) -> str | None:
        return self.config.get("preset")

    @property
    def epochs(self) -> int:
        """Planned epochs (config.json)."""
        return int(self.config.get("train", {}).get("epochs", 0))

    @property
    def epochs_done(self) -> int:
        return int(self.history[-1]["epoch"]) if self.history else 0

    @property
    def final_acc(self) -> float | None:
        """Test accuracy after the last finished epoch (with TTA at a finished run's last epoch)."""
        return _last(self.history, "test_acc")

    @property
    def best_acc(self) -> float | None:
        accs = [h["test_acc"] for h in self.history if h.get("test_acc") is not None]
        return max(accs) if accs else None

    @property
    def seconds(self) -> float | None:
        """Training time: the clock of the last finished epoch (data loading and compiling excluded)."""
        return _last(self.history, "elapsed")

    def _repr_html_(self) -> str:  # a notebook shows a run as its one-row `digitlab runs` table
        return runs_table([self])._repr_html_()

    def row(self) -> dict:
        """The fields `digitlab runs` shows, as plain values (for CSV/JSON and tables)."""
        return {
            "name": self.name,
            "dataset": self.dataset,
            "model": self.model,
            "preset": self.preset,
            "epochs": f"{self.epochs_done}/{self.epochs}",
            "final_acc": self.final_acc,
            "best_acc": self.best_acc,
            "seconds": self.seconds,
            "status": self.status,
        }


def _last(history: list[dict], key: str) -> float | None:
    for h in reversed(history):
        if h.get(key) is not None:
            return h[key]
    return None


def _number(text: str) -> float | int | None:
    if text in ("", "None", "nan"):
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_history(path: Path) -> list[dict]:
    """metrics.csv as dicts of numbers; empty cells (epochs without a test evaluation) become None."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    history = []
    for i, row in enumerate(rows, start=2):
        try:
            parsed = {k: _number(v) for k, v in row.items() if k is not None and v is not None}
        except ValueError as exc:
            raise DigitlabError(f"{path}: line {i} is not numbers ({exc})") from None
        if "epoch" not in parsed or parsed["epoch"] is None:
            raise DigitlabError(f"{path}: line {i} has no epoch")
        history.append(parsed)
    return history


def count_params(checkpoint: Path) -> int | None:
    """Trainable parameters of the model a checkpoint holds (BatchNorm statistics are not parameters)."""
    import torch

    from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint

    if not checkpoint.exists():
        return None
    model = model_from_checkpoint(load_checkpoint(checkpoint), torch.device("cpu"))
    return sum(p.numel() for p in model.parameters())


def _status(run_dir: Path, config: dict, history: list[dict], now: float) -> str:
    done = int(history[-1]["epoch"]) if history else 0
    planned = int(config.get("train", {}).get("epochs", 0))
    dry_run = bool(config.get("train", {}).get("dry_run", False))
    if history and (done >= planned or dry_run):  # the last row is written after the final evaluation
        return "finished"
    files = [run_dir / n for n in ("config.json", "metrics.csv", "steps.csv", "last.pt")]  # steps.csv: --log-every
    newest = max(f.stat().st_mtime for f in files if f.exists())
    per_epoch = max((h.get("train_time") or 0) + (h.get("eval_time") or 0) for h in history) if history else 0.0
    if now - newest < max(RUNNING_MIN_SECONDS, RUNNING_EPOCHS * per_epoch):
        return "running"
    return "interrupted"


def read_run(run_dir: str | Path, *, with_params: bool = False, now: float | None = None) -> RunInfo:
    """Read one run directory; a DigitlabError says why a folder is not a readable run.

    Args:
        run_dir: the run's folder (or a file inside it, e.g. its ``best.pt``).
        with_params: also count the model's parameters (loads ``last.pt``).
        now: the time to judge "running" against (tests); None: the current time.
    """
    path = Path(run_dir)
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise DigitlabError(f"{path} is not a folder")
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise DigitlabError(f"{path} is not a run (no config.json)")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DigitlabError(f"{cfg_path} is not readable JSON ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("train"), dict):
        raise DigitlabError(f"{cfg_path} is not a digitlab run configuration")
    history: list[dict] = []
    if (path / "metrics.csv").exists():
        try:
            history = read_history(path / "metrics.csv")
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DigitlabError(f"{path / 'metrics.csv'} is not readable ({exc})") from None
    info = RunInfo(path, config, history, _status(path, config, history, time.time() if now is None else now))
    if with_params:
        try:
            info.params = count_params(path / "last.pt")
        except DigitlabError:
            info.params = None  # a checkpoint being rewritten or from another tool: the table says "-"
    return info


def find_runs(root: str | Path, *, now: float | None = None) -> tuple[list[RunInfo], list[tuple[Path, str]]]:
    """Every run under ``root``, and every folder skipped with its reason.

    A folder with a ``config.json`` is a run; a folder without one whose subfolders hold runs
    (a sweep's folder) is searched in turn; any other folder is skipped. Runs come sorted by path.
    """
    root = Path(root)
    if not root.is_dir():
        raise DigitlabError(f"{root} is not a folder")
    if (root / "config.json").exists():
        return [read_run(root, now=now)], []
    runs: list[RunInfo] = []
    skipped: list[tuple[Path, str]] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (child / "config.json").exists():
            try:
                runs.append(read_run(child, now=now))
            except DigitlabError as exc:
                skipped.append((child, str(exc)))
        elif any((g / "config.json").exists() for g in child.iterdir() if g.is_dir()):
            inner, inner_skipped = find_runs(child, now=now)
            runs += inner
            skipped += inner_skipped
        else:
            skipped.append((child, "not a run (no config.json)"))
    return runs, skipped


def runs_table(runs: list[RunInfo]) -> Table:
    """The `digitlab runs` listing as a Table (prints as text, shows as HTML in a notebook)."""
    columns = ["name", "dataset", "model", "preset", "epochs", "final_acc", "best_acc", "seconds", "status"]
    return Table(columns, [r.row() for r in runs], title="runs")
