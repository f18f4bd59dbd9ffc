"""Distributed runs (engine/dist.py): threads per rank, and resuming after torchrun restarts a killed rank."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from digitlab.engine import dist
from digitlab.errors import DigitlabError

TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "OMP_NUM_THREADS")
RESTART_ENV = ("TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_RESTART_COUNT")


@pytest.fixture
def clean_env(monkeypatch):
    for k in TORCHRUN_ENV + RESTART_ENV:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def as_rank(monkeypatch, local_world: int, omp: str | None = "1") -> dist.DistInfo:
    """The environment torchrun gives a worker on a machine with ``local_world`` ranks."""
    monkeypatch.setenv("WORLD_SIZE", str(2 * local_world))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    if omp is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    return dist.detect()


def test_threads_single_process_keep_torch_default(clean_env):
    assert dist.rank_threads(dist.detect(), None) is None
    assert dist.rank_threads(dist.detect(), 3) == 3


def test_threads_under_torchrun_share_the_cores(clean_env, monkeypatch):
    monkeypatch.setattr(dist, "_cores", lambda: 8)
    info = as_rank(clean_env, local_world=2)  # torchrun's OMP_NUM_THREADS=1 would leave 1 of 4 cores
    assert dist.rank_threads(info, None) == 4
    assert dist.rank_threads(as_rank(clean_env, local_world=16), None) == 1  # never 0
    assert dist.rank_threads(info, 2) == 2  # --threads wins
    assert dist.rank_threads(as_rank(clean_env, local_world=2, omp="3"), None) is None  # the user's own choice


def test_set_threads_applies_it(clean_env, monkeypatch):
    monkeypatch.setattr(dist, "_cores", lambda: 4)
    before = torch.get_num_threads()
    try:
        dist.set_threads(as_rank(clean_env, local_world=2), None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_restart_resume(clean_env, tmp_path):
    flags = {"name": "r", "runs_dir": str(tmp_path)}
    assert dist.restart_resume(flags) is None  # not under torchrun
    clean_env.setenv("TORCHELASTIC_MAX_RESTARTS", "2")
    clean_env.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    with pytest.raises(DigitlabError, match="pass --name"):
        dist.restart_resume({"runs_dir": str(tmp_path)})
    assert dist.restart_resume(flags) is None  # the first start starts
    clean_env.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert dist.restart_resume(flags) is None  # killed before its first epoch ended: start again
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "last.pt").write_bytes(b"")
    assert dist.restart_resume(flags) == str(tmp_path / "r")


def _train_cmd(runs: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *extra,
        "-m", "digitlab", "train", "--dataset", "digits", "--model", "mlp", "--width", "32",
        "--epochs", "12", "--batch-size", "8", "--lr", "0.05", "--runs-dir", str(runs), "--name", name, "-q",
    ]  # fmt: skip


def _kill_rank_after_first_epoch(proc: subprocess.Popen, last: Path, timeout: float = 240) -> bool:
    """SIGKILL local rank 1 once ``last.pt`` exists; False if the run ended first."""
    import psutil

    deadline = time.monotonic() + timeout
    while not last.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if child.environ().get("LOCAL_RANK") == "1":
                child.kill()
                return True
        except psutil.Error:
            continue
    return False


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_torchrun_restart_resumes_from_last_pt_and_ends_as_an_uninterrupted_run(tmp_path):
    """2 CPU ranks; rank 1 is killed after the first last.pt; --max-restarts 1 continues the run."""
    env = {k: v for k, v in os.environ.items() if k not in RESTART_ENV}
    proc = subprocess.Popen(
        _train_cmd(tmp_path, "killed", "--max-restarts=1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    killed = _kill_rank_after_first_epoch(proc, tmp_path / "killed" / "last.pt")
    out, err = proc.communicate(timeout=300)
    assert killed, "the run ended before a rank could be killed\n" + err[-2000:]
    assert proc.returncode == 0, err[-3000:]
    assert out.count("resuming killed after epoch") == 1 and out.count("final test accuracy") == 1
    whole = subprocess.run(_train_cmd(tmp_path, "whole"), capture_output=True, text=True, env=env, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    a = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 12
    for k in b["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    # Epochs trained before the kill come back from last.pt, where the history is stored in float32.
    assert [h.get("test_acc") for h in a["history"]] == pytest.approx([h.get("test_acc") for h in b["history"]])
    final = [line for line in out.splitlines() if "final test accuracy" in line]
    assert final[0].split(" after ")[0] == next(
        line.split(" after ")[0] for line in whole.stdout.splitlines() if "final test accuracy" in line
    )


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_two_nodes_on_one_machine_train_one_run(tmp_path):
    """--nnodes 2 with a c10d rendezvous on 127.0.0.1: two launchers, one run, rank 0 reports it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rdzv = ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=two-nodes", "--nnodes=2"]
    cmd = _train_cmd(tmp_path, "nodes", *rdzv)
    cmd[cmd.index("--standalone") : cmd.index("--standalone") + 2] = ["--nproc_per_node=1"]
    cmd[cmd.index("--epochs") + 1] = "3"
    env = {k: v for k, v in os.environ.items() if k not in RESTART_ENV}
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in (0, 1)]
    outs = [p.communicate(timeout=300) for p in nodes]
    for p, (_, err) in zip(nodes, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert sum(out.count("final test accuracy") for out, _ in outs) == 1
    last = torch.load(tmp_path / "nodes" / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["history"][-1]["test_acc"] > 0.7
