"""A real Ctrl-C during `digitlab train`: exit code 130, a valid last.pt, and `--resume` finishing the run.

The training runs in a subprocess that gets an actual SIGINT (engine/train.py, engine/checkpoint.py,
cli/train.py), so the KeyboardInterrupt lands wherever the loop happens to be, saving included.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from digitlab.cli import main
from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint

EPOCHS = 1000  # ~25 ms each on one CPU thread: the run is still going when the signal comes
START_TIMEOUT = 120  # seconds for the first last.pt (interpreter start-up, torch import, first epoch)


@pytest.fixture(autouse=True)
def restore_threads():
    """`train --threads 1` in-process changes torch's process-wide setting; put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _child_gets_sigint_by_default() -> None:
    """Python ignores SIGINT for good when it starts with SIGINT ignored (as in some CI job shells)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(runs: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "digitlab",
        "train",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--epochs",
        str(EPOCHS),
        "--threads",
        "1",
        "--runs-dir",
        str(runs),
        "--name",
        "r",
        "-q",
    ]
    env = {**os.environ, "COLUMNS": "400"}  # the stderr hint on one line
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_child_gets_sigint_by_default,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"training exited ({proc.returncode}) before writing {path}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            raise AssertionError(f"no {path} after {timeout} s")
        time.sleep(0.02)


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_ctrl_c_saves_a_resumable_run(tmp_path, capsys):
    run_dir = tmp_path / "r"
    proc = _start(tmp_path)
    try:
        _wait_for(run_dir / "last.pt", proc, START_TIMEOUT)
        time.sleep(0.1)  # a few epochs more: the signal lands mid-epoch or mid-save, not right after the first
        assert proc.poll() is None, "training finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert "interrupted" in err and f"--resume {run_dir}" in err.replace("\n", ""), err
    assert "Traceback" not in err

    # last.pt is whole: it loads, validates, rebuilds the model, and carries the training state
    leftovers = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary checkpoint files left behind: {leftovers}"
    state = load_checkpoint(run_dir / "last.pt")
    saved = state["epoch"]
    assert 1 <= saved < EPOCHS
    assert [h["epoch"] for h in state["history"]] == list(range(1, saved + 1))
    assert {"optimizer", "rng"} <= set(state)
    model = model_from_checkpoint(state)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert load_checkpoint(run_dir / "best.pt")["epoch"] >= 1

    target = saved + 2
    assert main(["train", "--resume", str(run_dir), "--epochs", str(target), "--threads", "1", "-q"]) == 0
    text = capsys.readouterr().out
    assert f"resuming r after epoch {saved} of {target}" in text and "final test accuracy" in text

    final = load_checkpoint(run_dir / "last.pt")
    assert final["epoch"] == target
    assert [h["epoch"] for h in final["history"]] == list(range(1, target + 1))
    assert final["history"][:saved] == state["history"]  # the old epochs are kept as they were
    rows = _csv_rows(run_dir / "metrics.csv")
    assert len(rows) == target and [int(r["epoch"]) for r in rows] == list(range(1, target + 1))
    assert final["config"]["train"]["epochs"] == target
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]

    # Checked last so that the run's files are checked whatever the exit code: 130 tells a shell
    # (`digitlab train && digitlab eval`) and CI that the run did not finish.
    assert proc.returncode == 130, f"exit code {proc.returncode} after Ctrl-C\nstderr:\n{err}"


def test_interrupt_while_writing_metrics_keeps_the_csv_whole(tmp_path, monkeypatch):
    """A Ctrl-C that lands while metrics.csv is being rewritten must not leave it empty or cut short.

    Deterministic stand-in for the unlucky timing of the real Ctrl-C above (about 1 in 10 there):
    KeyboardInterrupt is raised from inside the CSV writer at the third epoch.
    """
    from digitlab.config import RunConfig
    from digitlab.engine.train import train

    calls = []
    real = csv.DictWriter.writerows

    def interrupted_writerows(self, rows):
        calls.append(len(rows))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, rows)

    monkeypatch.setattr(csv.DictWriter, "writerows", interrupted_writerows)
    cfg = RunConfig(runs_dir=str(tmp_path), name="r")
    cfg.data.dataset, cfg.model.model, cfg.train.epochs = "digits", "mlp", 5
    with pytest.raises(KeyboardInterrupt):
        train(cfg, quiet=True)
    assert len(calls) == 3, "metrics.csv is no longer written with csv.DictWriter.writerows: update this test"

    run_dir = tmp_path / "r"
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 3  # last.pt is written before metrics.csv
    rows = _csv_rows(run_dir / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] in ([1, 2], [1, 2, 3]), f"metrics.csv after the interrupt: {rows}"
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
