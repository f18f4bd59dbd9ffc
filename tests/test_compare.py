"""Comparing runs (`digitlab compare`): the fields that differ, mean ± spread over seeds, curves, CSV/JSON."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from conftest import make_run
from digitlab.cli import main
from digitlab.config import RunConfig
from digitlab.data.digits import load_digits
from digitlab.engine.train import train
from digitlab.evaluate.table import Spread
from digitlab.experiments.compare import collect, compare_runs, differing_fields, flatten
from digitlab.experiments.runs import read_run


def test_differing_fields_ignore_names_and_provenance():
    a = {"train": {"lr": 0.1, "seed": 0}, "model": {"model": "fast"}, "name": "a", "provenance": {"git": "1"}}
    b = {"train": {"lr": 0.2, "seed": 0}, "model": {"model": "fast"}, "name": "b", "provenance": {"git": "2"}}
    c = {"train": {"lr": 0.2, "seed": 1}, "model": {"model": "fast"}, "name": "c", "provenance": {"git": "2"}}
    assert differing_fields([a, b]) == ["lr"]
    assert differing_fields([a, b, c]) == ["lr", "seed"]
    assert flatten(a) == {"lr": 0.1, "seed": 0, "model": "fast"}


def test_compare_groups_seeds(tmp_path):
    paths = [
        make_run(tmp_path / "lo-0", planned=2, done=2, lr=0.1, seed=0, accs=[0.8, 0.90]),
        make_run(tmp_path / "lo-1", planned=2, done=2, lr=0.1, seed=1, accs=[0.8, 0.94]),
        make_run(tmp_path / "hi-0", planned=2, done=2, lr=0.3, seed=0, accs=[0.8, 0.97]),
        make_run(tmp_path / "hi-1", planned=2, done=2, lr=0.3, seed=1, accs=[0.8, 0.99]),
        make_run(tmp_path / "hi-2", lr=0.3, seed=2, planned=5, done=2, accs=[0.1, 0.2]),  # interrupted: not averaged
    ]
    comparison = compare_runs([read_run(p) for p in paths])
    assert comparison.fields == ["epochs", "lr", "seed"]
    assert [r["name"] for r in comparison.table.rows] == ["lo-0", "lo-1", "hi-0", "hi-1", "hi-2"]
    groups = comparison.over_seeds.rows
    assert [g["lr"] for g in groups] == [0.3, 0.1]  # best mean first
    hi = groups[0]["final_acc"]
    assert isinstance(hi, Spread) and hi.n == 2 and hi.mean == pytest.approx(0.98)
    assert hi.std == pytest.approx(0.01 * 2**0.5)  # sample standard deviation of 0.97, 0.99
    assert groups[0]["seeds"] == "0,1"
    assert "98.00% ± 1.41%" in str(comparison)
    assert "<table>" in comparison._repr_html_()


def test_no_seed_table_without_repeats(tmp_path):
    a = make_run(tmp_path / "a", lr=0.1)
    b = make_run(tmp_path / "b", lr=0.2)
    assert compare_runs([read_run(a), read_run(b)]).over_seeds is None


def test_collect_takes_folders_of_runs(tmp_path):
    make_run(tmp_path / "sweep" / "x", lr=0.1)
    make_run(tmp_path / "sweep" / "y", lr=0.2)
    make_run(tmp_path / "z", lr=0.3)
    assert [r.name for r in collect([tmp_path / "sweep", tmp_path / "z"])] == ["x", "y", "z"]


def test_compare_two_tiny_trainings(tmp_path, capsys):
    """Two real runs on the 8x8 digits (about a second each), compared from the command line."""
    data = load_digits().subset(400, 200)
    for name, lr in (("slow", 0.02), ("fast", 0.2)):
        cfg = RunConfig(name=name, runs_dir=str(tmp_path))
        cfg.data.dataset = "digits"
        cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.threads = 2, 32, lr, 1
        cfg.data.augment = "none"
        train(cfg, data=data, quiet=True)
    out = tmp_path / "out"
    argv = ["compare", str(tmp_path / "slow"), str(tmp_path / "fast"), "--out", str(out)]
    assert main(argv + ["--csv", str(out / "c.csv"), "--json", str(out / "c.json")]) == 0
    printed = capsys.readouterr().out
    assert "lr" in printed and "0.02" in printed and "0.2" in printed and "finished" in printed
    doc = json.loads((out / "c.json").read_text())
    assert doc["fields"] == ["lr"]
    runs = {r["name"]: r for r in doc["runs"]}
    assert runs["slow"]["params"] == runs["fast"]["params"] > 1000
    assert all(0 < r["final_acc"] <= 1 and r["best_acc"] >= r["final_acc"] for r in runs.values())
    with (out / "c.csv").open() as f:
        assert {r["name"]: float(r["lr"]) for r in csv.DictReader(f)} == {"slow": 0.02, "fast": 0.2}
    with Image.open(out / "compare.png") as im:
        assert im.format == "PNG" and im.size[0] >= 800


def test_cli_compare_refuses_missing_runs(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
