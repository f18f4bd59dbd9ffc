"""A run directory's life: claimed by one training at a time, written atomically, finished last.

``claim_run_dir`` takes an exclusive lock on ``runs/<name>/.lock`` before anything is written and
holds it until the training ends, so two trainings into one ``--name`` cannot both run: the second
gets a one-line error. The kernel drops the lock when its process dies (``kill -9`` included), so
a crashed run never blocks the next one. Temporary files that a killed write left behind are
removed once the lock is held (no other writer can be at work then).

A run is finished when its ``last.pt`` says ``finished`` and its ``eval.json`` exists: the final
evaluation's files are written last, after the checkpoints are calibrated.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
from pathlib import Path

from digitlab.config import RunConfig
from digitlab.engine.checkpoint import write_atomically
from digitlab.errors import DigitlabError
from digitlab.provenance import provenance

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the existing-run check still applies
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
FINISHED_MARK = "eval.json"  # the last file a finished run writes


class RunDir:
    """A claimed run directory; ``release()`` (or leaving the ``with`` block) gives it back."""

    def __init__(self, path: Path, lock_fd: int | None) -> None:
        self.path, self._fd = path, lock_fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def run_dir_of(cfg: RunConfig) -> Path:
    """``runs_dir/name``; a run without a name gets a timestamp (set on ``cfg``)."""
    if cfg.name is None:
        # a model of your own (package.module:ClassName) names its run by its class: no ':' in folder names
        cfg.name = _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{cfg.model.model.rpartition(':')[2]}"
    return Path(cfg.runs_dir) / cfg.name


def claim_run_dir(path: Path, *, resuming: bool) -> RunDir:
    """Create ``path`` if needed, lock it for this process, and clean up what a killed run left.

    Raises DigitlabError when another training holds the lock, or when (not resuming) the folder
    already holds a run: continuing one is what ``--resume`` is for.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DigitlabError(f"cannot create run directory {path}: {exc.strerror or exc}") from exc
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DigitlabError(
                f"run directory {path} is in use by another training; wait for it or choose another --name"
            ) from None
    if not resuming and (path / "last.pt").exists():
        os.close(fd)
        raise DigitlabError(
            f"run directory {path} already holds a run; continue it with "
            f"`digitlab train --resume {path}` or choose another --name"
        )
    remove_stale_temporaries(path)
    return RunDir(path, fd)


def remove_stale_temporaries(path: Path) -> list[str]:
    """Delete the ``.<name>.*.tmp`` files of writes that a kill interrupted; returns their names."""
    removed = []
    for tmp in path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp.name)
    return removed


def write_config(path: Path, cfg: RunConfig) -> None:
    """``config.json``: the resolved config with its provenance, written whole or not at all."""
    text = json.dumps({**cfg.to_dict(), "provenance": provenance()}, indent=2) + "\n"
    write_atomically(path / "config.json", lambda f: f.write(text.encode()))


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """Rewrite metrics.csv whole (``write_atomically``): a Ctrl-C mid-write keeps the previous one."""
    if not history:
        return
    text = io.StringIO(newline="")
    fields = list(dict.fromkeys(k for row in history for k in row))  # rows from older versions lack columns
    w = csv.DictWriter(text, fieldnames=fields)
    w.writeheader()
    w.writerows(history)
    write_atomically(path, lambda f: f.write(text.getvalue().encode()))


def is_finished(run_dir: Path, state: dict) -> bool:
    """Whether the run whose ``last.pt`` is ``state`` wrote its last artefact. A ``last.pt`` from before
    runs recorded ``finished`` counts as finished once it reached its epochs."""
    epochs = (state.get("config") or {}).get("train", {}).get("epochs", 0)
    if "finished" in state:
        return bool(state["finished"]) and (run_dir / FINISHED_MARK).exists()
    return state.get("epoch", 0) >= epochs
