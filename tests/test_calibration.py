"""Temperature calibration: the fit, and `digitlab export` storing it."""

from __future__ import annotations

import pytest
import torch

from digitlab.cli import main
from digitlab.engine.checkpoint import load_checkpoint, save_checkpoint
from digitlab.evaluate.calibration import expected_calibration_error, fit_temperature, nll


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 10, generator=g) * 3
    labels = torch.multinomial(torch.softmax(logits / 0.5, 1), 1, generator=g).squeeze(1)
    t = fit_temperature(logits, labels)
    assert abs(t - 0.5) < 0.03
    assert nll(logits, labels, t) < nll(logits, labels)
    before = expected_calibration_error(torch.softmax(logits, 1), labels)
    after = expected_calibration_error(torch.softmax(logits / t, 1), labels)
    assert after < 0.02 < before


def test_fit_temperature_needs_examples():
    with pytest.raises(ValueError, match="no examples"):
        fit_temperature(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))


def test_export_calibrates_a_label_smoothed_model_and_says_so(tmp_path, capsys):
    """The default recipe's label smoothing leaves the model underconfident: export fits T < 1."""
    assert (
        main(["train", "--dataset", "digits", "--epochs", "3", "--runs-dir", str(tmp_path), "--name", "d", "-q"]) == 0
    )
    capsys.readouterr()
    out = tmp_path / "d.pt"
    assert main(["export", str(tmp_path / "d"), str(out)]) == 0
    printed = capsys.readouterr().out
    t = load_checkpoint(out)["temperature"]
    assert 0.05 < t < 1 and f"temperature {t:.3f}" in printed and "digits test (359 images)" in printed

    trained = load_checkpoint(tmp_path / "d" / "best.pt")["temperature"]  # fitted by train on fp32 weights
    assert abs(t - trained) < 0.05 * trained
    assert main(["export", str(tmp_path / "d"), str(tmp_path / "n.pt"), "--no-calibrate"]) == 0
    assert load_checkpoint(tmp_path / "n.pt")["temperature"] == trained  # kept as it was

    # Data that cannot be loaded: calibration is skipped with a note, or refused when asked for.
    moved = load_checkpoint(tmp_path / "d" / "best.pt")
    moved["dataset"] = str(tmp_path / "no-such-folder")
    del moved["temperature"]  # as from an older digitlab
    save_checkpoint(tmp_path / "moved.pt", moved)
    capsys.readouterr()
    assert main(["export", str(tmp_path / "moved.pt"), str(tmp_path / "m.pt")]) == 0
    assert "not calibrated" in capsys.readouterr().out and "temperature" not in load_checkpoint(tmp_path / "m.pt")
    assert main(["export", str(tmp_path / "moved.pt"), str(tmp_path / "m2.pt"), "--calibrate"]) == 2
    assert "no-such-folder" in capsys.readouterr().err and not (tmp_path / "m2.pt").exists()
