"""--resume: the flags it refuses and accepts, and the last.pt files it cannot continue."""

from __future__ import annotations

import pytest

from digitlab.cli import main
from digitlab.engine.checkpoint import load_checkpoint, save_checkpoint
from digitlab.engine.resume import MAY_CHANGE, load_resume_state, resume_config
from digitlab.errors import DigitlabError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-epoch digits run to resume (trained once for the module)."""
    root = tmp_path_factory.mktemp("runs")
    args = ["train", "--dataset", "digits", "--model", "mlp", "--width", "16", "--epochs", "2", "--lr", "0.05"]
    assert main(args + ["--runs-dir", str(root), "--name", "r", "-q"]) == 0
    return root / "r"


def test_flags_that_would_change_the_run_are_refused_by_name(run, capsys):
    rc = main(["train", "--resume", str(run), "--model", "lenet5", "--lr", "5", "--dataset", "cifar10", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "--dataset, --model, --lr would change it" in err and "--epochs" in err
    assert main(["train", "--resume", str(run), "--preset", "seed000", "-q"]) == 2
    assert "--preset" in capsys.readouterr().err
    assert load_checkpoint(run / "last.pt")["epoch"] == 2  # nothing trained


def test_flags_that_may_change_are_applied_and_unchanged_values_pass(run):
    state = load_resume_state(run)
    given = {
        "train": {"epochs": 5, "threads": 1, "device": "cpu", "lr": 0.05, "log_every": 10},
        "model": {"model": "mlp"},
        "data": {"data_dir": "/somewhere"},
        "run": {"name": "ignored", "runs_dir": "ignored"},
    }
    cfg = resume_config(state, run, given)
    assert (cfg.train.epochs, cfg.train.threads, cfg.train.log_every, cfg.data.data_dir) == (5, 1, 10, "/somewhere")
    assert (cfg.name, cfg.runs_dir) == ("r", str(run.parent))  # from the resumed path
    assert "epochs" in MAY_CHANGE["train"] and "lr" not in MAY_CHANGE["train"]


def test_resume_continues_with_accepted_flags(run, capsys):
    assert main(["train", "--resume", str(run), "--epochs", "3", "--threads", "1", "--device", "cpu", "-q"]) == 0
    assert "resuming r after epoch 2 of 3" in capsys.readouterr().out
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert "already finished its 3 epochs" in capsys.readouterr().out


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda s: s.update(epoch=-1), "epoch -1"),
        (lambda s: s["config"]["train"].update(warp_speed=9), "train.warp_speed"),
        (lambda s: s.pop("rng"), "lacks rng"),
        (lambda s: s.pop("history"), "lacks history"),
    ],
)
def test_a_last_pt_that_cannot_be_resumed_is_a_clear_error(run, tmp_path, capsys, edit, message):
    state = load_checkpoint(run / "last.pt")
    edit(state)
    bad = tmp_path / "bad"
    save_checkpoint(bad / "last.pt", state)
    with pytest.raises(DigitlabError, match=message):
        load_resume_state(bad)
    assert main(["train", "--resume", str(bad), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_image_folder_whose_classes_changed_is_not_resumed(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "folder"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.new("L", (12, 12), 40 * i + (200 if c == "a" else 0)).save(root / c / f"{i}.png")
    args = ["train", "--dataset", str(root), "--model", "mlp", "--epochs", "1", "--batch-size", "4"]
    assert main(args + ["--runs-dir", str(tmp_path), "--name", "f", "-q"]) == 0
    (root / "c").mkdir()
    for i in range(6):
        Image.new("L", (12, 12), 128).save(root / "c" / f"{i}.png")
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "f"), "--epochs", "2", "-q"]) == 2
    err = capsys.readouterr().err
    assert "3 classes" in err and "Traceback" not in err
