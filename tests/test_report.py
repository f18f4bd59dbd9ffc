"""write_report: the files it writes, the worst errors it picks, and format_report."""

from __future__ import annotations

import json

import torch
from PIL import Image

from digitlab.evaluate.report import format_report, write_report

CLASSES = ["a", "b", "c"]


def toy():
    # Samples 1, 4, 5 are wrong, with confidence 0.6, 0.9 and 0.7 in their wrong prediction.
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    probs = torch.tensor(
        [
            [0.8, 0.1, 0.1],
            [0.3, 0.6, 0.1],  # a -> b (0.6)
            [0.1, 0.8, 0.1],
            [0.2, 0.7, 0.1],
            [0.05, 0.05, 0.9],
            [0.7, 0.1, 0.2],  # c -> a (0.7)
        ]
    )
    probs[4] = torch.tensor([0.05, 0.9, 0.05])  # c -> b (0.9)
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    return y, probs, images


def test_write_report_files_and_errors(tmp_path):
    y, probs, images = toy()
    m = write_report(tmp_path / "out", y, probs, CLASSES, images)
    out = tmp_path / "out"
    for name in ("confusion.png", "errors.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG"
    assert m["accuracy"] == 0.5
    assert m["n_errors"] == 3
    assert [(e["index"], e["true"], e["pred"], e["p"]) for e in m["worst_errors"]] == [
        (4, "c", "b", 0.9),
        (5, "c", "a", 0.7),
        (1, "a", "b", 0.6),
    ]
    assert json.loads((out / "eval.json").read_text()) == m
    text = (out / "report.txt").read_text()
    assert "macro avg" in text and "most confused" in text and "c → b: 1" in text


def test_meta_leads_the_metrics_and_eval_json(tmp_path):
    y, probs, images = toy()
    meta = {"checkpoint": "runs/x/best.pt", "dataset": "mnist", "loss": 0.25}
    m = write_report(tmp_path, y, probs, CLASSES, images, meta=meta)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert list(saved)[:3] == ["checkpoint", "dataset", "loss"] and saved == m
    assert saved["dataset"] == "mnist" and saved["accuracy"] == 0.5


def test_max_errors(tmp_path):
    y, probs, images = toy()
    m = write_report(tmp_path, y, probs, CLASSES, images, max_errors=1)
    assert [e["index"] for e in m["worst_errors"]] == [4]
    assert m["n_errors"] == 3


def test_no_errors_rgb(tmp_path):
    y = torch.tensor([0, 1, 2])
    m = write_report(tmp_path, y, torch.eye(3), CLASSES, torch.zeros(3, 3, 32, 32, dtype=torch.uint8))
    assert m["accuracy"] == 1.0 and m["worst_errors"] == []
    assert (tmp_path / "errors.png").exists()
    assert "(none)" in (tmp_path / "report.txt").read_text()


def test_format_report():
    y, probs, images = toy()
    from digitlab.evaluate.metrics import compute_metrics

    text = format_report(compute_metrics(y, probs.argmax(1), CLASSES))
    assert text.startswith("accuracy 0.5000 on 6 samples")
    assert "macro precision" in text and "a → b: 1" in text


def test_one_error_is_singular(tmp_path):
    """One error is "1 error", not "1 errors"."""
    y = torch.tensor([0, 1, 2])
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1]])  # only c -> a is wrong
    metrics = write_report(tmp_path, y, probs, CLASSES, torch.zeros(3, 1, 28, 28, dtype=torch.uint8))
    text = format_report(metrics)
    assert "(1 error)" in text and "1 errors" not in text
    metrics = write_report(tmp_path, torch.tensor([0, 1, 2]), probs.roll(1, 1), CLASSES, torch.zeros(3, 1, 8, 8))
    assert "(3 errors)" in format_report(metrics)
