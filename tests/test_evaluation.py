"""One evaluation: train and eval report the same fp32 accuracy, in one eval.json schema, side by side."""

from __future__ import annotations

import json

import pytest

from digitlab.cli import main
from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from digitlab.engine.evaluation import EVAL_KEYS, default_eval_dir, evaluate
from digitlab.engine.plan import trained_with_tta


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A bf16-trained digits run with shift augmentation (so its final evaluation averages TTA views)."""
    root = tmp_path_factory.mktemp("runs")
    args = ["train", "--dataset", "digits", "--model", "fast", "--width", "8", "--epochs", "2", "--augment", "shift"]
    assert main(args + ["--precision", "bf16", "--runs-dir", str(root), "--name", "r", "-q"]) == 0
    return root / "r"


def test_train_reports_the_fp32_accuracy_that_eval_reports(run, capsys):
    trained = json.loads((run / "eval.json").read_text())
    last = load_checkpoint(run / "last.pt")
    assert last["config"]["train"]["precision"] == "bf16" and trained["tta"] is True
    assert last["metrics"]["test_acc"] == trained["accuracy"]
    from digitlab.data import load_dataset

    data = load_dataset("digits")
    fp32 = evaluate(model_from_checkpoint(last), data.test_x, data.test_y, last["mean"], last["std"], tta=True)
    assert trained["accuracy"] == pytest.approx(fp32.accuracy, abs=1e-9)  # fp32, whatever the training precision
    capsys.readouterr()
    assert main(["eval", str(run / "last.pt"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == trained["accuracy"] and trained_with_tta(last)


def test_one_eval_json_schema_for_train_and_eval(run, capsys):
    trained = json.loads((run / "eval.json").read_text())
    assert main(["eval", str(run), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert list(trained)[: len(EVAL_KEYS)] == list(EVAL_KEYS) == list(evaluated)[: len(EVAL_KEYS)]
    assert set(trained) == set(evaluated)
    assert trained["epoch"] == evaluated["epoch"] == 2 and trained["dataset"] == evaluated["dataset"] == "digits"
    assert trained["calibration"]["temperature"] == load_checkpoint(run / "last.pt")["temperature"]
    assert evaluated["checkpoint"].endswith("best.pt") and trained["checkpoint"].endswith("last.pt")


def test_eval_writes_beside_training_outputs_without_replacing_them(run, tmp_path, capsys):
    before = {n: (run / n).read_bytes() for n in ("eval.json", "report.txt", "errors.png", "confusion.png")}
    assert main(["eval", str(run), "--no-tta"]) == 0
    assert {n: (run / n).read_bytes() for n in before} == before
    own = run / "eval-best"
    assert default_eval_dir(run / "best.pt") == own
    assert json.loads((own / "eval.json").read_text())["tta"] is False and (own / "report.txt").exists()
    assert main(["eval", str(run), "--out", str(tmp_path / "mine")]) == 0
    assert (tmp_path / "mine" / "eval.json").exists()
    assert str(own) in capsys.readouterr().out


def test_a_checkpoint_outside_a_run_is_evaluated_into_the_current_folder(run, tmp_path, monkeypatch):
    loose = tmp_path / "models" / "m.pt"
    loose.parent.mkdir()
    loose.write_bytes((run / "best.pt").read_bytes())
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(loose)]) == 0
    assert (tmp_path / "eval-m" / "eval.json").exists() and not (loose.parent / "eval.json").exists()


def test_tta_views_are_weighted_to_one_airbench_six_for_colour_five_shifts_for_digits():
    import torch

    from digitlab.engine.evaluation import tta_views

    rgb = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    views = tta_views(rgb)
    assert len(views) == 6 and sum(w for _, w in views) == pytest.approx(1.0)
    assert torch.equal(views[1][0], rgb.flip(-1)) and views[0][1] == 2 * views[2][1]
    up_left = views[2][0]  # moved by one pixel: row 0 is the mirrored row 1, then rows 0..4
    assert torch.equal(up_left[..., 1:, 1:], rgb[..., :-1, :-1]) and torch.equal(up_left[..., 0, 1:], rgb[..., 1, :-1])
    gray = torch.rand(2, 1, 6, 6)
    digits = tta_views(gray)
    assert len(digits) == 5 and all(w == pytest.approx(0.2) for _, w in digits)
    assert not any(torch.equal(v, gray.flip(-1)) for v, _ in digits)  # a mirrored digit is no digit


def test_shift_tta_views_are_the_training_shifts_of_the_pixels():
    """A digit's TTA views are the training's one-pixel shifts of the uint8 image (black borders), then normalised;
    not shifts of the normalised image, whose zero border would be the mean's grey."""
    import torch
    from torch import nn

    from digitlab.data.loader import normalize, translate
    from digitlab.engine.evaluation import evaluate

    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)
    y = torch.zeros(4, dtype=torch.long)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    mean, std = (0.3,), (0.4,)
    got = evaluate(model, x, y, mean, std, tta=True).logits
    with torch.no_grad():
        want = model(normalize(x, mean, std)) * 0.2
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            moved = translate(x, torch.full((4,), dy), torch.full((4,), dx), pad=1)
            want += model(normalize(moved, mean, std)) * 0.2
    assert torch.allclose(got, want, atol=1e-5)
