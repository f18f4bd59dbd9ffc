"""kill -9 during training, counted: corrupt files, runs that resume, results against an uninterrupted run.

    python benchmarks/kill_training.py --tries 30 --epochs 40

Each try starts ``digitlab train`` (the built-in ``digits`` set, an MLP, one thread: deterministic),
sends it SIGKILL at a random moment between its start and the end an uninterrupted run takes, and then
checks the run directory as a user would find it:

- every ``*.pt`` left there must load with ``load_checkpoint`` (format, fields, tensor digest);
- ``digitlab train --resume`` must finish the run (or, killed before its first ``last.pt``, the same
  command again must start it), leave no temporary files, and end with weights bitwise equal to the
  uninterrupted run's.

Prints JSON: tries, kills that landed before the first checkpoint, corrupt files, runs that resumed and
finished, runs whose final weights differ from the reference, stale temporaries seen before the resume.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from digitlab.engine.checkpoint import load_checkpoint
from digitlab.errors import DigitlabError


def train_cmd(runs: Path, epochs: int, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "digitlab", "train"]
    if resume:
        return [*cmd, "--resume", str(runs / "r"), "-q"]
    return [
        *cmd, "--dataset", "digits", "--model", "mlp", "--epochs", str(epochs), "--threads", "1",
        "--seed", "0", "--runs-dir", str(runs), "--name", "r", "-q",
    ]  # fmt: skip


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["state_dict"]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def wait_for_first_checkpoint(proc: subprocess.Popen, last: Path, timeout: float = 300) -> float:
    """Seconds from now until ``last`` exists (or the process ends)."""
    t0 = time.monotonic()
    while not last.exists() and proc.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(0.005)
    return time.monotonic() - t0


def one_try(
    root: Path, epochs: int, early: bool, fraction: float, reference: dict[str, torch.Tensor], first: float, rest: float
) -> dict:
    """Kill during start-up (``early``: at ``fraction`` of ``first``, the uninterrupted run's seconds to its
    first checkpoint) or during training (at ``fraction`` of ``rest``, its seconds after that)."""
    runs = root / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    run = runs / "r"
    proc = subprocess.Popen(train_cmd(runs, epochs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if early:
        kill_at = fraction * first
        time.sleep(kill_at)
    else:
        kill_at = wait_for_first_checkpoint(proc, run / "last.pt")
        time.sleep(fraction * rest)
        kill_at += fraction * rest
    ended_first = proc.poll() is not None
    proc.kill()
    proc.wait()
    corrupt = []
    for pt in sorted(run.glob("*.pt")) if run.exists() else []:
        try:
            load_checkpoint(pt)
        except DigitlabError as exc:
            corrupt.append(f"{pt.name}: {exc}")
    stale = [p.name for p in run.glob(".*.tmp")] if run.exists() else []
    before_first = not (run / "last.pt").exists()
    again = subprocess.run(train_cmd(runs, epochs, resume=not before_first), capture_output=True, text=True)
    finished = again.returncode == 0 and (run / "eval.json").exists()
    return {
        "kill_at_s": round(kill_at, 3),
        "ended_before_kill": ended_first,
        "before_first_checkpoint": before_first,
        "corrupt": corrupt,
        "stale_temporaries": stale,
        "finished": finished,
        "temporaries_left": [p.name for p in run.glob(".*.tmp")],
        "same_weights": finished and same(weights(run), reference),
        "error": "" if finished else again.stderr[-500:],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tries", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--early", type=float, default=0.1, help="share of the kills that land during start-up")
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    ap.add_argument("--out", help="write the JSON here too")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        ref = subprocess.Popen(train_cmd(root / "ref", args.epochs), stdout=subprocess.DEVNULL)
        first = wait_for_first_checkpoint(ref, root / "ref" / "r" / "last.pt")
        if ref.wait() != 0:
            raise SystemExit("the uninterrupted run failed")
        whole = time.monotonic() - t0
        reference = weights(root / "ref" / "r")
        tries = [
            one_try(root, args.epochs, rng.random() < args.early, rng.random(), reference, first, whole - first)
            for _ in range(args.tries)
        ]
    summary = {
        "tries": len(tries),
        "uninterrupted_run_s": round(whole, 2),
        "first_checkpoint_s": round(first, 2),
        "killed_before_first_checkpoint": sum(t["before_first_checkpoint"] for t in tries),
        "ended_before_kill": sum(t["ended_before_kill"] for t in tries),
        "corrupt_files": sum(len(t["corrupt"]) for t in tries),
        "stale_temporaries_seen": sum(len(t["stale_temporaries"]) for t in tries),
        "temporaries_left_after_resume": sum(len(t["temporaries_left"]) for t in tries),
        "finished": sum(t["finished"] for t in tries),
        "same_weights_as_uninterrupted": sum(t["same_weights"] for t in tries),
        "torch": torch.__version__,
        "tries_detail": tries,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
