"""`digitlab sweep`: the spec, the flags each run gets, and real sweeps of tiny runs (each in its own process)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import make_run
from digitlab.cli import main
from digitlab.errors import DigitlabError
from digitlab.experiments.runs import find_runs
from digitlab.experiments.sweep import SweepSpec, flag_args, parse_spec, run_name, run_sweep

optuna = pytest.importorskip("optuna")

# A run of a few hundred 8x8 digits: about a second of training, most of a run is starting Python.
TINY = ["--dataset", "digits", "--limit-train", "300", "--limit-test", "100", "--epochs", "2", "--batch-size", "32"]


def test_parse_spec_converts_values_by_the_option_type():
    spec = parse_spec(
        ["lr=0.05,0.1", "batch-size=32,64", "ema=true,false", "model=fast,lenet5"], [], "0,1", None, None, []
    )
    assert spec.grid == {"lr": [0.05, 0.1], "batch_size": [32, 64], "ema": [True, False], "model": ["fast", "lenet5"]}
    assert spec.seeds == [0, 1] and spec.search == "grid" and spec.n_trials() == 16
    ranged = parse_spec(["optimizer=sgd,adam"], ["lr=0.01:0.5:log", "epochs=1:3"], "0", None, 7, [])
    assert ranged.search == "tpe" and ranged.n_trials() == 7
    assert ranged.ranges["lr"].log and not ranged.ranges["lr"].integer
    assert ranged.ranges["epochs"].integer and (ranged.ranges["epochs"].low, ranged.ranges["epochs"].high) == (1, 3)
    assert SweepSpec.from_dict(json.loads(json.dumps(ranged.to_dict()))) == ranged  # stored in study.db and back


@pytest.mark.parametrize(
    ("grid", "ranges", "seeds", "search", "train_args", "message"),
    [
        (["lrr=0.1,0.2"], [], "0", None, [], "unknown train option 'lrr'"),
        (["lr=fast"], [], "0", None, [], "not a valid float"),
        (["seed=0,1"], [], "0", None, [], "use --seeds"),
        ([], ["lr=0.1:0.5"], "0", "grid", [], "needs --search random or tpe"),
        ([], ["lr=0.5:0.1"], "0", "tpe", [], "LOW must be below HIGH"),
        ([], ["model=a:b"], "0", "tpe", [], "numeric option"),
        ([], [], "0", None, [], "nothing to vary"),
        (["lr=0.1,0.2"], [], "0,x", None, [], "--seeds"),
        (["lr=0.1,0.2"], [], "0", None, ["--lr", "0.3"], "--lr is set by the sweep"),
        (["lr=0.1,0.2"], [], "0", None, ["--name", "x"], "--name is set by the sweep"),
        (["lr=0.1,0.2"], [], "0", "bayes", [], "unknown search 'bayes'"),
    ],
)
def test_parse_spec_errors(grid, ranges, seeds, search, train_args, message):
    with pytest.raises(DigitlabError, match=message):
        parse_spec(grid, ranges, seeds, search, None, train_args)


def test_flags_and_names():
    params = {"lr": 0.1, "ema": False, "width": None, "model": "fast"}
    assert flag_args(params) == ["--lr", "0.1", "--no-ema", "--model", "fast"]
    assert run_name(params, 3) == "lr0.1_emaFalse_widthNone_modelfast_seed3"
    assert run_name({"data_dir": "a/b c"}, 0) == "data-dira-b-c_seed0"  # a safe folder name


@pytest.mark.slow  # two runs at once: mostly two Python processes importing torch
def test_sweep_two_trials_then_continue(tmp_path, capsys):
    """Two configurations on tiny digits, two processes at once; one trial left RUNNING by a sweep that was
    killed is retried; running the sweep again trains nothing more."""
    folder = tmp_path / "s"
    folder.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{folder / 'study.db'}", study_name="sweep", direction="maximize")
    spec = parse_spec(["lr=0.05,0.2"], [], "0", None, None, TINY)
    study.set_user_attr("spec", spec.to_dict())
    study.enqueue_trial({"lr": 0.2})
    study.ask()  # RUNNING, and its process gone: what a killed sweep leaves

    argv = ["sweep", "--grid", "lr=0.05,0.2", "--jobs", "2", "--name", "s", "--runs-dir", str(tmp_path), "--", *TINY]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "lr0.05_seed0:" in out and "lr0.2_seed0:" in out
    assert "trials: 2 complete, 1 interrupted" in out

    runs, _ = find_runs(folder)
    assert sorted(r.name for r in runs) == ["lr0.05_seed0", "lr0.2_seed0"]
    assert all(r.status == "finished" and r.epochs == 2 and 0 < r.final_acc <= 1 for r in runs)
    assert {r.config["train"]["lr"] for r in runs} == {0.05, 0.2}
    assert all(r.config["data"]["limit_train"] == 300 for r in runs)
    for name in ("runs.csv", "compare.json", "compare.png", "lr0.05_seed0.log", "sweep.json"):
        assert (folder / name).exists(), name
    done = optuna.load_study(study_name="sweep", storage=f"sqlite:///{folder / 'study.db'}")
    values = {t.params["lr"]: t.value for t in done.get_trials() if t.state.name == "COMPLETE"}
    assert values == {r.config["train"]["lr"]: pytest.approx(r.final_acc) for r in runs}

    assert main(argv) == 0  # again: nothing left to train
    assert "lr0.05_seed0:" not in capsys.readouterr().out
    assert len(optuna.load_study(study_name="sweep", storage=f"sqlite:///{folder / 'study.db'}").trials) == 3

    changed = ["sweep", "--grid", "lr=0.1,0.3", "--name", "s", "--runs-dir", str(tmp_path), "--", *TINY]
    assert main(changed) == 2
    assert "holds a different sweep" in capsys.readouterr().err


@pytest.mark.slow  # one Python process importing torch, on a shared machine
def test_sweep_records_a_crashed_run_as_failed(tmp_path):
    lines: list[str] = []
    spec = parse_spec(["optimizer=nosuch"], [], "0", None, None, TINY)
    result = run_sweep(spec, tmp_path / "s", log=lines.append)
    assert result.states == {"FAIL": 1} and result.comparison is None
    assert len(result.failures) == 1 and "optimizernosuch_seed0: exit status 2" in result.failures[0]
    assert "unknown optimizer" in (tmp_path / "s" / "optimizernosuch_seed0.log").read_text().lower()
    # A failed configuration is not retried when the sweep runs again.
    assert run_sweep(spec, tmp_path / "s", log=lines.append).states == {"FAIL": 1}


def test_search_proposals_stay_in_their_ranges():
    from digitlab.experiments.sweep import _suggest

    spec = parse_spec(["optimizer=sgd,adam"], ["lr=0.01:0.5:log", "epochs=1:3"], "0", "random", 20, [])
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    proposals = []
    for _ in range(20):
        trial = study.ask()
        proposals.append(_suggest(trial, spec))
        study.tell(trial, 0.5)
    assert all(0.01 <= p["lr"] <= 0.5 and isinstance(p["lr"], float) for p in proposals)
    assert {p["epochs"] for p in proposals} <= {1, 2, 3} and all(isinstance(p["epochs"], int) for p in proposals)
    assert {p["optimizer"] for p in proposals} == {"sgd", "adam"}
    assert len({p["lr"] for p in proposals}) == 20  # a range, not a few grid values
    assert flag_args(proposals[0])[:2] == ["--optimizer", proposals[0]["optimizer"]]


def test_a_run_stopped_half_way_continues_with_resume(tmp_path, monkeypatch):
    """What running an interrupted sweep again does with each run: reuse it, resume it, or start it."""
    import shutil
    import subprocess

    from digitlab.experiments.sweep import _Runner

    spec = parse_spec(["lr=0.1,0.2,0.3"], [], "0", None, None, TINY)
    make_run(tmp_path / "lr0.1_seed0", planned=2, done=2, accs=[0.8, 0.9])  # finished
    make_run(tmp_path / "lr0.2_seed0", planned=3, done=1)  # stopped after epoch 1
    (tmp_path / "lr0.2_seed0" / "last.pt").write_bytes(b"")
    commands = []

    class FakeTrain:  # stands in for the `digitlab train` process: records its command, finishes the run
        def __init__(self, cmd, **kwargs):
            commands.append(cmd)
            name = cmd[cmd.index("--resume") + 1] if "--resume" in cmd else str(tmp_path / cmd[cmd.index("--name") + 1])
            shutil.rmtree(name, ignore_errors=True)
            make_run(Path(name), planned=3, done=3, accs=[0.5, 0.6, 0.7])

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeTrain)
    lines: list[str] = []
    runner = _Runner(spec, tmp_path, lines.append, jobs=2)
    assert runner.run({"lr": 0.1}, 0) == pytest.approx(0.9) and commands == []  # reused, not retrained
    assert runner.run({"lr": 0.2}, 0) == pytest.approx(0.7)
    resumed = commands[0]
    assert resumed[resumed.index("--resume") + 1] == str(tmp_path / "lr0.2_seed0")
    assert resumed[resumed.index("--threads") + 1] == str(max(1, len(os.sched_getaffinity(0)) // 2))  # cores / jobs
    assert "--resume" in commands[0] and "--lr" not in commands[0]  # a resumed run keeps its recipe
    assert runner.run({"lr": 0.3}, 0) == pytest.approx(0.7)
    fresh = commands[1]
    assert fresh[fresh.index("--lr") + 1] == "0.3" and fresh[fresh.index("--seed") + 1] == "0"
    assert fresh[fresh.index("--name") + 1] == "lr0.3_seed0" and "--limit-train" in fresh
    assert "already finished" in lines[0] and lines[1].startswith("lr0.2_seed0: resuming (output in ")
    assert lines[3].startswith("lr0.3_seed0: training")
