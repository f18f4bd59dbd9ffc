"""The CIFAR-10 workflows end to end on JPEG copies: train, predict a photo, bench, and the real copy (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_archive, make_copy
from digitlab.cli import main
from digitlab.data.cifar10_jpeg import ARCHIVE, CLASSES

REPO = Path(__file__).resolve().parent.parent
REAL_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg" / ARCHIVE


@pytest.fixture
def small_copy(tmp_path, isolated_data_env) -> Path:
    """A data dir holding a 250-image cifar10-jpeg.tar.gz, as ../shared/data holds the real one."""
    make_archive(make_copy(tmp_path / "unpacked"), tmp_path / "data" / "cifar10-jpeg" / ARCHIVE)
    return tmp_path / "data"


def test_train_eval_predict_a_photo(small_copy, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["train", "--preset", "cifar-fast-cpu", "--epochs", "1", "--data-dir", str(small_copy)]
    assert main([*args, "--runs-dir", str(runs), "--name", "c", "-q"]) == 0
    report = json.loads((runs / "c" / "eval.json").read_text())
    assert report["dataset"].startswith("cifar10 (JPEG q75 copy")  # every report says which files
    assert "of cifar10 (JPEG q75 copy" in (runs / "c" / "report.txt").read_text()
    from digitlab.inference.predictor import Predictor

    assert Predictor.load(runs / "c").info["dataset"].startswith("cifar10 (JPEG q75 copy")  # predict, serve
    assert main(["export", str(runs / "c"), str(tmp_path / "slim.pt"), "--no-calibrate"]) == 0
    assert Predictor.load(tmp_path / "slim.pt").info["dataset"].startswith("cifar10 (JPEG q75 copy")

    # A user's photo of any size and shape: resized to the model's 32x32 RGB, answered with a class name.
    photo = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(photo)
    capsys.readouterr()
    assert main(["predict", "--model", str(runs / "c"), "--json", "--top-k", "3", str(photo)]) == 0
    out = json.loads(capsys.readouterr().out)
    answer = out[0] if isinstance(out, list) else out
    text = json.dumps(answer)
    named = [c for c in CLASSES if f'"{c}"' in text]
    assert len(named) >= 3, text  # the top 3 are class names, not digits


def test_bench_cifar_section(small_copy, tmp_path):
    from digitlab.bench import CIFAR_TARGETS, cifar_time_to_accuracy
    from digitlab.cli.bench import add_cifar_rows
    from digitlab.cli.output import Table

    res = cifar_time_to_accuracy(str(small_copy), 1, device="cpu", quick=True)
    assert res["dataset"].startswith("cifar10 (JPEG q75 copy") and res["load_seconds"] > 0
    assert list(res["presets"]) == ["cifar-fast-cpu", "cifar-fast"]
    for name, r in res["presets"].items():
        assert r["preset"] == name and 0.0 <= r["final_acc"]["median"] <= 1.0
        for t in CIFAR_TARGETS:
            assert f"time_to_{t:.3f}" in r and r[f"reached_{t:.3f}"] in (0, 1)
    table = Table()
    table.add_column("measure")
    table.add_column("value")
    add_cifar_rows(table, res)
    names = list(table.columns[0].cells)
    assert len(names) == 1 + 2 * (2 + len(CIFAR_TARGETS))  # the load, then each preset's rows
    assert "cifar-fast: time to 94% (" in " ".join(names)


@pytest.mark.slow
@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason=f"the CIFAR-10 JPEG copy is not at {REAL_ARCHIVE}")
def test_real_cifar10_copy_learns(tmp_path, monkeypatch):
    """A few hundred steps on the real JPEG copy reach far above chance (10%) on its whole test set."""
    from digitlab.config import RunConfig
    from digitlab.data import load_dataset
    from digitlab.engine.presets import apply_preset
    from digitlab.engine.train import train

    monkeypatch.delenv("DIGITLAB_DATA", raising=False)
    data = load_dataset("cifar10", REAL_ARCHIVE.parent)  # the decode cache makes reruns fast
    assert data.label == "cifar10 (JPEG q75 copy)" and data.classes == CLASSES
    cfg = apply_preset(RunConfig(runs_dir=str(tmp_path), name="real"), "cifar-fast-cpu")
    cfg.train.epochs, cfg.train.threads = 1, min(2, os.cpu_count() or 1)
    res = train(cfg, data=data, quiet=True)  # one epoch: 50 steps of 1000
    assert res.final_acc > 0.45, res.final_acc
