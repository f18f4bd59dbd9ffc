"""--log-every step lines and steps.csv, curves per step, --tensorboard without the package."""

from __future__ import annotations

import csv
import importlib.util

import pytest
from PIL import Image

from digitlab.config import RunConfig
from digitlab.engine.checkpoint import load_checkpoint
from digitlab.engine.train import train
from digitlab.errors import DigitlabError


def small_cfg(tmp_path, **train_kw) -> RunConfig:
    cfg = RunConfig(name="run", runs_dir=str(tmp_path))
    cfg.model.model, cfg.model.width = "mlp", 16
    for k, v in {"epochs": 2, "batch_size": 32, "lr": 0.05, "precision": "fp32", **train_kw}.items():
        setattr(cfg.train, k, v)
    return cfg


def test_log_every_prints_steps_and_writes_steps_csv(tmp_path, tiny_data):
    from rich.console import Console

    console = Console(record=True, width=200)
    res = train(small_cfg(tmp_path, log_every=3), data=tiny_data(), console=console)  # 8 steps per epoch
    printed = [line for line in console.export_text().splitlines() if line.startswith("step")]
    with open(res.run_dir / "steps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 12, 15] and len(printed) == 5
    assert [int(r["epoch"]) for r in rows] == [1, 1, 2, 2, 2]
    assert all(float(r["loss"]) > 0 and float(r["images_per_s"]) > 0 for r in rows)
    assert "epoch   1" in printed[0] and "loss" in printed[0] and "images/s" in printed[0]
    losses = load_checkpoint(res.run_dir / "last.pt")["step_losses"]
    assert losses.shape == (16,) and float(losses[2]) == pytest.approx(float(rows[0]["loss"]), rel=1e-4)


def test_steps_csv_of_a_resumed_run_drops_the_interrupted_epochs_steps(tmp_path, tiny_data, monkeypatch):
    from digitlab.engine import train as train_mod

    data = tiny_data()
    real = train_mod.train_one_epoch
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2 logs a step, then dies
            k["steps_log"].row(11, __import__("torch").tensor(9.0), 0.1, 32)
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "train_one_epoch", flaky)
    with pytest.raises(KeyboardInterrupt):
        train(small_cfg(tmp_path, log_every=1, epochs=3), data=data, quiet=True)
    monkeypatch.undo()
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    train(RunConfig.from_dict(state["config"]), data=data, resume=state, quiet=True)
    with open(tmp_path / "run" / "steps.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(1, 25))  # each step once, the dead epoch's row gone


def test_curves_show_every_step_even_for_one_epoch(tmp_path, tiny_data):
    from digitlab.evaluate.plots import plot_curves

    res = train(small_cfg(tmp_path, epochs=1), data=tiny_data(), quiet=True)
    steps = load_checkpoint(res.run_dir / "last.pt")["step_losses"].tolist()
    fig = plot_curves(res.history, None, steps=steps)
    ax_loss, ax_acc = fig.axes[:2]
    assert ax_loss.get_xlabel() == "step" and len(ax_loss.lines[0].get_xdata()) == 8  # one point per step
    test_x = ax_loss.lines[-1].get_xdata()
    assert list(test_x) == [8]  # the epoch's test point sits at its last step, not at a fractional epoch
    with Image.open(res.run_dir / "curves.png") as im:
        assert im.size[0] >= 500


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_without_the_package_is_refused_before_any_work(tmp_path, tiny_data):
    with pytest.raises(DigitlabError, match="needs the tensorboard package"):
        train(small_cfg(tmp_path, tensorboard=True), data=tiny_data(), quiet=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs the tensorboard package")
def test_tensorboard_gets_the_same_scalars(tmp_path, tiny_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = train(small_cfg(tmp_path, tensorboard=True, log_every=4), data=tiny_data(), quiet=True)
    events = EventAccumulator(str(res.run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "epoch/test_acc"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [4, 8, 12, 16]
