"""Reading run directories back (`digitlab runs`): finished, interrupted, running, half-written and foreign folders."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import make_run
from digitlab.cli import main
from digitlab.errors import DigitlabError
from digitlab.experiments.runs import find_runs, read_history, read_run, runs_table


def test_read_run_finished(tmp_path):
    run = read_run(make_run(tmp_path / "a", planned=3, done=3, accs=[0.6, 0.9, 0.8]))
    assert run.status == "finished"
    assert (run.name, run.dataset, run.model, run.epochs, run.epochs_done) == ("a", "digits", "fast", 3, 3)
    assert run.final_acc == pytest.approx(0.8) and run.best_acc == pytest.approx(0.9)
    assert run.seconds == pytest.approx(3.3)
    assert run.params is None  # no checkpoint


def test_read_run_interrupted_and_running(tmp_path):
    old = read_run(make_run(tmp_path / "old", planned=5, done=2, age=3600))
    assert old.status == "interrupted" and old.epochs_done == 2 and old.final_acc == pytest.approx(0.7)
    fresh = read_run(make_run(tmp_path / "fresh", planned=5, done=2, age=5))
    assert fresh.status == "running"
    # Started but no epoch finished yet: config.json only.
    started = read_run(make_run(tmp_path / "started", planned=5, done=0, age=3600))
    assert started.status == "interrupted" and started.history == [] and started.final_acc is None


def test_history_keeps_epochs_without_test_evaluation(tmp_path):
    run = make_run(tmp_path / "gaps", planned=3, done=3, accs=[None, 0.7, 0.75])
    history = read_history(run / "metrics.csv")
    assert history[0]["test_acc"] is None and history[1]["test_acc"] == pytest.approx(0.7)
    assert read_run(run).best_acc == pytest.approx(0.75)


def test_find_runs_skips_junk_with_reasons(tmp_path):
    make_run(tmp_path / "done", planned=2, done=2)
    make_run(tmp_path / "stopped", planned=4, done=1)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a run")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"data": {"dataset": "mni')  # half-written
    make_run(tmp_path / "badcsv", planned=2, done=2)
    (tmp_path / "badcsv" / "metrics.csv").write_text("epoch,test_acc\n1,zero\n")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text('{"learning_rate": 3}')  # another tool's config
    make_run(tmp_path / "sweep" / "trial-1", planned=1, done=1)  # a sweep's folder of runs

    runs, skipped = find_runs(tmp_path)
    assert [r.path.relative_to(tmp_path).as_posix() for r in runs] == ["done", "stopped", "sweep/trial-1"]
    assert [r.status for r in runs] == ["finished", "interrupted", "finished"]
    reasons = {p.name: why for p, why in skipped}
    assert set(reasons) == {"junk", "broken", "badcsv", "foreign"}
    assert "no config.json" in reasons["junk"]
    assert "not readable JSON" in reasons["broken"]
    assert "line 2" in reasons["badcsv"]
    assert "not a digitlab run" in reasons["foreign"]


def test_read_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(DigitlabError, match="no config.json"):
        read_run(tmp_path)


def test_runs_table_text_and_html(tmp_path):
    make_run(tmp_path / "a<b", planned=2, done=2, accs=[0.9, 0.95])
    runs, _ = find_runs(tmp_path)
    table = runs_table(runs)
    text = str(table)
    assert "95.00%" in text and "2/2" in text and "finished" in text
    html = table._repr_html_()
    assert html.startswith("<table>") and "<td>a&lt;b</td>" in html  # names are escaped
    assert runs[0]._repr_html_() == html  # one run shows as its own row


def test_cli_runs(tmp_path, capsys):
    make_run(tmp_path / "finished-run", planned=2, done=2, accs=[0.9, 0.95], preset="seed001")
    make_run(tmp_path / "interrupted-run", planned=5, done=2, accs=[0.5, 0.6])
    (tmp_path / "junk").mkdir()
    assert main(["runs", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    lines = {line.split()[1]: line for line in captured.out.splitlines() if "-run" in line}
    assert "finished" in lines["finished-run"] and "95.00%" in lines["finished-run"]
    assert "seed001" in lines["finished-run"]
    assert "interrupted" in lines["interrupted-run"] and "2/5" in lines["interrupted-run"]
    assert "skipped" in captured.err and "junk" in captured.err

    assert main(["runs", str(tmp_path), "--json", "-", "--csv", str(tmp_path / "runs.csv")]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["status"] for r in rows] == ["finished", "interrupted"]
    assert rows[0]["final_acc"] == pytest.approx(0.95)
    with (tmp_path / "runs.csv").open() as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["finished-run", "interrupted-run"]


def test_cli_runs_on_a_missing_folder(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
