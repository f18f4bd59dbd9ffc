"""Run directories: claimed by one training, stale temporaries removed, finished only when whole, full disks."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from digitlab.cli import main
from digitlab.config import RunConfig
from digitlab.engine import finish
from digitlab.engine.checkpoint import load_checkpoint
from digitlab.engine.rundir import claim_run_dir, is_finished, write_config
from digitlab.engine.train import train
from digitlab.errors import DigitlabError


def small_cfg(tmp_path, name: str = "run", **train_kw) -> RunConfig:
    cfg = RunConfig(name=name, runs_dir=str(tmp_path))
    cfg.model.model, cfg.model.width = "mlp", 16
    for k, v in {"epochs": 2, "batch_size": 64, "lr": 0.05, "precision": "fp32", **train_kw}.items():
        setattr(cfg.train, k, v)
    return cfg


def test_a_claimed_run_directory_refuses_a_second_claim(tmp_path):
    first = claim_run_dir(tmp_path / "r", resuming=False)
    with pytest.raises(DigitlabError, match="in use by another training"):
        claim_run_dir(tmp_path / "r", resuming=True)  # even a resume waits for the running training
    first.release()
    with claim_run_dir(tmp_path / "r", resuming=False):  # released: free again
        pass


def test_two_trainings_into_one_name_cannot_both_run(tmp_path, capsys):
    """The first holds the directory while it trains; the second exits 2 with one line and writes nothing."""
    cmd = [sys.executable, "-m", "digitlab", "train", "--dataset", "digits", "--model", "mlp", "--epochs", "1000"]
    cmd += ["--threads", "1", "--runs-dir", str(tmp_path), "--name", "same", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "same" / "last.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        before = load_checkpoint(tmp_path / "same" / "last.pt")["config"]
        rc = main(["train", "--dataset", "digits", "--runs-dir", str(tmp_path), "--name", "same", "-q"])
        err = capsys.readouterr().err
        assert rc == 2 and "in use by another training" in err and "Traceback" not in err
        assert json.loads((tmp_path / "same" / "config.json").read_text())["train"]["epochs"] == 1000
        assert before["model"]["model"] == "mlp"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def test_stale_temporary_files_are_removed_at_the_next_start(tmp_path, tiny_data):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    (run / ".metrics.csv.x.tmp").write_text("epoch")
    (run / "notes.txt").write_text("mine")
    train(small_cfg(tmp_path, epochs=1), data=tiny_data(), quiet=True)
    assert not list(run.glob(".*.tmp")) and (run / "notes.txt").read_text() == "mine"


def test_config_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    cfg = small_cfg(tmp_path)
    write_config(tmp_path, cfg)
    good = (tmp_path / "config.json").read_text()

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    cfg.train.epochs = 99
    with pytest.raises(DigitlabError, match="no space left on the disk writing .*config.json"):
        write_config(tmp_path, cfg)
    assert (tmp_path / "config.json").read_text() == good and not list(tmp_path.glob(".*.tmp"))


def test_a_full_disk_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    import torch

    real = torch.save

    def full_disk(obj, f, *a, **k):
        if "optimizer" in obj:  # the first last.pt
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    rc = main(["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--runs-dir", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "no space left on the disk writing" in err and "last.pt" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_run_is_finished_only_after_its_last_artefact(tmp_path, monkeypatch, tiny_data, capsys):
    """Killed after the last epoch's checkpoint but before its report: not finished; --resume finishes it."""
    data = tiny_data()

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(finish, "report_evaluation", killed)
    with pytest.raises(KeyboardInterrupt):
        train(small_cfg(tmp_path), data=data, quiet=True)
    monkeypatch.undo()
    run = tmp_path / "run"
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and not (run / "eval.json").exists() and not is_finished(run, state)

    cfg = RunConfig.from_dict(state["config"])
    res = train(cfg, data=data, resume=state, quiet=True)  # no epoch left: only the steps after the loop
    done = load_checkpoint(run / "last.pt")
    assert is_finished(run, done) and len(res.history) == 2 and (run / "report.txt").exists()
    assert json.loads((run / "eval.json").read_text())["epoch"] == 2 and "temperature" in done


def test_an_existing_run_is_still_refused_without_resume(tmp_path, tiny_data):
    train(small_cfg(tmp_path, epochs=1), data=tiny_data(), quiet=True)
    with pytest.raises(DigitlabError, match="already holds a run"):
        train(small_cfg(tmp_path, epochs=1), data=tiny_data(), quiet=True)


def test_a_kill_between_the_last_checkpoint_and_its_metrics_row_loses_no_row(tmp_path, monkeypatch, tiny_data):
    from digitlab.engine import train as train_mod

    data, real = tiny_data(), train_mod.write_metrics_csv

    def killed(path, history):
        if len(history) == 2:  # the last epoch: last.pt is saved, its metrics.csv row not yet
            raise KeyboardInterrupt
        return real(path, history)

    monkeypatch.setattr(train_mod, "write_metrics_csv", killed)
    with pytest.raises(KeyboardInterrupt):
        train(small_cfg(tmp_path), data=data, quiet=True)
    monkeypatch.undo()
    run = tmp_path / "run"
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # header and epoch 1
    state = load_checkpoint(run / "last.pt")
    train(RunConfig.from_dict(state["config"]), data=data, resume=state, quiet=True)
    assert len((run / "metrics.csv").read_text().splitlines()) == 3 and is_finished(
        run, load_checkpoint(run / "last.pt")
    )
