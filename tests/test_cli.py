"""Every `digitlab` subcommand smoke-run end to end on small data (cli/), as pytorch/examples runs --dry-run in CI.

Most commands run in-process through `digitlab.cli.main(argv)` (no interpreter start-up per call);
`python -m digitlab --help` runs once in a subprocess to check the module entry point itself.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer.main
from PIL import Image

from conftest import tiny_cifar
from digitlab.cli import app, main
from digitlab.config import RunConfig
from digitlab.engine.checkpoint import load_checkpoint
from digitlab.engine.presets import PRESETS, apply_preset
from digitlab.inference.onnx import load_onnx
from digitlab.models import list_models

PRESET_DATASET = {
    name: apply_preset(RunConfig(), name).data.dataset for name in PRESETS
}  # a preset may keep the default
MNIST_PRESETS = [name for name, d in PRESET_DATASET.items() if d == "mnist"]
CIFAR_PRESETS = [name for name, d in PRESET_DATASET.items() if d == "cifar10"]
LIMITS = ["--limit-train", "512", "--limit-test", "256"]
# Top-level commands that have a smoke test; a new command needs one. `bench --quick` is too long for
# this module, so it runs end to end in tests/test_bench.py and only its --help runs here.
SMOKED = {"models", "summary", "train", "eval", "data", "experiment", "predict", "serve", "bench", "export"}
# Commands whose end-to-end tests live in their own module, which runs them through main().
SMOKED_ELSEWHERE = {
    "runs": "test_runs.py",
    "compare": "test_compare.py",
    "sweep": "test_sweep.py",
    "inspect": "test_inspect.py",
}
RUN_FILES = (
    "config.json",
    "best.pt",
    "last.pt",
    "metrics.csv",
    "curves.png",
    "confusion.png",
    "errors.png",
    "report.txt",
    "eval.json",
)
EVAL_FILES = ("confusion.png", "errors.png", "report.txt", "eval.json")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (two threads on a busy 2-core box wait for each other);
    `train --threads` would also change the process-wide setting, so restore it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _click_commands(group, prefix=()) -> list[tuple[str, ...]]:
    """Every command path of the Typer app: ("train",), ("data", "show"), ..."""
    out = []
    for name, cmd in sorted(group.commands.items()):
        out.append(prefix + (name,))
        if hasattr(cmd, "commands"):
            out += _click_commands(cmd, prefix + (name,))
    return out


ALL_COMMANDS = _click_commands(typer.main.get_command(app))


def _run_files_ok(run_dir: Path) -> dict:
    for f in RUN_FILES:
        assert (run_dir / f).is_file(), f"{run_dir} lacks {f}: {sorted(p.name for p in run_dir.iterdir())}"
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    return load_checkpoint(run_dir / "last.pt")


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- help and the command list -----------------------------------------------------------------------


def test_python_m_digitlab_help(tmp_path):
    """The module entry point, as a user types it."""
    proc = subprocess.run(
        [sys.executable, "-m", "digitlab", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stderr
    for name in SMOKED:
        assert name in proc.stdout
    assert "Traceback" not in proc.stderr


def test_every_command_has_a_smoke_test():
    top = {path[0] for path in ALL_COMMANDS}
    known = SMOKED | set(SMOKED_ELSEWHERE)
    assert top == known, (
        f"commands without a smoke test in tests/test_cli.py: {sorted(top - known)}; gone: {sorted(known - top)}"
    )
    here = Path(__file__).parent
    for name, module in SMOKED_ELSEWHERE.items():
        text = (here / module).read_text()
        assert f'["{name}",' in text or f'main(["{name}"' in text, f"{module} does not run `digitlab {name}`"


@pytest.mark.parametrize("path", [(), *ALL_COMMANDS], ids=lambda p: " ".join(p) or "digitlab")
def test_help(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage" in out and "--help" in out


# --- models, summary, data -----------------------------------------------------------------------------


def test_models_lists_every_registered_model(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "digitlab models" in out
    for info in list_models():
        assert info.name in out
    assert "1x28x28" in out and "3x32x32" in out  # digit models and CIFAR models at their natural size


def test_summary_cnn(capsys):
    assert main(["summary", "cnn"]) == 0
    out = capsys.readouterr().out
    assert "cnn on 1x28x28 input, 10 classes" in out
    assert "Total params: 1,199,882" in out  # pytorch/examples' MNIST net
    assert "Units." not in out  # torchinfo's enum is shown as (M)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--no-such-option"], "No such option"),
        (["train", "--epochs", "abc"], "Invalid value for '--epochs'"),
        (["predict"], "Missing argument"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["bench", "--repeats", "0"], "Invalid value for '--repeats'"),  # 0 repeats is refused, not a bench of nothing
    ],
)
def test_usage_errors_are_a_message_and_exit_code_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Usage: digitlab" in err and "Traceback" not in err


def test_summary_unknown_model(capsys):
    assert main(["summary", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "cnn" in err and "Traceback" not in err


def test_data_info_mnist(mnist_dir, isolated_data_env, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # the path row stays on one line
    assert main(["data", "info", "mnist", "--data-dir", str(mnist_dir), "--no-download"]) == 0
    out = capsys.readouterr().out
    assert "60,000 images" in out and "10,000 images" in out
    assert "1 x 28 x 28 uint8 (gray)" in out and "0.1307" in out and "0.3081" in out
    assert str(mnist_dir) in out


def test_data_show_mnist(mnist_dir, isolated_data_env, tmp_path, capsys):
    out = tmp_path / "grid.png"
    rc = main(
        [
            "data",
            "show",
            "mnist",
            "--data-dir",
            str(mnist_dir),
            "--no-download",
            "--out",
            str(out),
            "--count",
            "12",
            "--split",
            "test",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_data_download_finds_existing_files(mnist_dir, isolated_data_env, capsys):
    """No network: the files are already there (and digits ships with scikit-learn)."""
    assert main(["data", "download", "mnist", "--data-dir", str(mnist_dir)]) == 0
    assert "mnist is already at" in capsys.readouterr().out
    assert main(["data", "download", "digits"]) == 0
    assert "nothing to download" in capsys.readouterr().out


# --- train --dry-run for every preset, then eval -------------------------------------------------------


def test_presets_are_all_smoked():
    assert MNIST_PRESETS and CIFAR_PRESETS
    assert set(MNIST_PRESETS) | set(CIFAR_PRESETS) == set(PRESETS), "a preset on another dataset needs a test"


@pytest.mark.parametrize("preset", MNIST_PRESETS)
def test_train_dry_run_mnist_preset(preset, mnist_dir, isolated_data_env, tmp_path, capsys):
    want = apply_preset(RunConfig(), preset)
    rc = main(
        [
            "train",
            "--preset",
            preset,
            "--dry-run",
            *LIMITS,
            "--data-dir",
            str(mnist_dir),
            "--no-download",
            "--runs-dir",
            str(tmp_path),
            "--name",
            preset,
            "-q",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "final test accuracy" in out and f"run directory: {tmp_path / preset}" in out
    ckpt = _run_files_ok(tmp_path / preset)
    assert ckpt["model_name"] == want.model.model and ckpt["dataset"] == "mnist" and ckpt["task"] == "digits"
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 1
    cfg = ckpt["config"]
    assert cfg["preset"] == preset and cfg["train"]["dry_run"] is True
    assert cfg["train"]["optimizer"] == want.train.optimizer and cfg["train"]["batch_size"] == want.train.batch_size
    assert cfg["model"] == want.to_dict()["model"]
    assert cfg["data"]["limit_train"] == 512 and cfg["data"]["limit_test"] == 256
    assert len(_csv_rows(tmp_path / preset / "metrics.csv")) == 1
    evaluated = json.loads((tmp_path / preset / "eval.json").read_text())
    assert evaluated["accuracy"] is not None and evaluated["epoch"] == 1
    assert evaluated["checkpoint"] == str(tmp_path / preset / "last.pt") and evaluated["dataset"] == "mnist"
    saved = json.loads((tmp_path / preset / "config.json").read_text())
    assert saved["preset"] == preset and "provenance" in saved


def dry_run(preset: str, mnist_dir, runs) -> int:
    """`train --preset PRESET --dry-run` on a little MNIST, into ``runs/r``."""
    args = ["--data-dir", str(mnist_dir), "--no-download", "--runs-dir", str(runs), "--name", "r", "-q"]
    return main(["train", "--preset", preset, "--dry-run", *LIMITS, *args])


def test_eval_mnist_run(mnist_dir, isolated_data_env, tmp_path, capsys):
    """`eval RUN_DIR` reads best.pt and the run's data location; evaluates the full test set."""
    run = tmp_path / "r"
    assert dry_run("seed002-mlp", mnist_dir, tmp_path) == 0
    for f in EVAL_FILES:
        (run / f).unlink()
    capsys.readouterr()
    out_dir = tmp_path / "eval-out"
    assert main(["eval", str(run), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "on 10000 samples" in out and f"to {out_dir}" in out.replace("\n", "")  # rich wraps long paths
    for f in EVAL_FILES:
        assert (out_dir / f).is_file() and not (run / f).exists()
    metrics = json.loads((out_dir / "eval.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and sum(map(sum, metrics["confusion"])) == 10000
    # the file alone says what was evaluated, as --json does
    assert metrics["checkpoint"] == str(run / "best.pt") and metrics["dataset"] == "mnist"
    assert metrics["tta"] is False and metrics["loss"] > 0

    assert main(["eval", str(run / "last.pt"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["dataset"] == "mnist" and metrics["checkpoint"] == str(run / "last.pt")
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["macro_f1"] <= 1.0
    for f in EVAL_FILES:  # beside the run's own files (deleted above), which stay as training wrote them
        assert (run / "eval-last" / f).is_file() and not (run / f).exists()


def test_export_slims_a_checkpoint_that_still_predicts(mnist_dir, isolated_data_env, tmp_path, capsys, monkeypatch):
    """`export RUN OUT` keeps what inference needs, in float16, and predicts like the original."""
    from digitlab.inference import predictor as predictor_mod
    from digitlab.inference.predictor import Predictor

    assert dry_run("seed002-cnn", mnist_dir, tmp_path) == 0
    out = tmp_path / "slim.pt"
    assert (
        main(["export", str(tmp_path / "r"), str(out), "--no-calibrate"]) == 0
    )  # same probabilities (test_calibration)
    assert "wrote" in capsys.readouterr().out
    full, slim = load_checkpoint(tmp_path / "r" / "best.pt"), load_checkpoint(out)
    assert "optimizer" not in slim and "history" not in slim and slim["classes"] == full["classes"]
    assert all(v.dtype == torch.float16 for v in slim["state_dict"].values() if v.is_floating_point())
    assert out.stat().st_size < (tmp_path / "r" / "last.pt").stat().st_size
    img = Image.fromarray(np.pad(np.full((40, 8), 255, np.uint8), 30))  # a "1" on black
    a, b = Predictor.load(tmp_path / "r" / "best.pt").predict(img), Predictor.load(out).predict(img)
    assert a.text == b.text and abs(a.items[0].probability - b.items[0].probability) < 0.01

    # --as-default writes the package's shipped model (redirected here to a temporary file).
    target = tmp_path / "assets" / "default.pt"
    monkeypatch.setattr(predictor_mod, "default_model_path", lambda must_exist=True: target)
    assert main(["export", str(out), "--as-default", "--full"]) == 0
    assert load_checkpoint(target)["model_name"] == "cnn-small"
    twin = target.with_name("default.onnx")  # ... and its ONNX twin, which predict and serve run
    assert load_onnx(twin)[1]["checkpoint_digest"] == load_checkpoint(target)["digest"]
    assert main(["export", str(out)]) == 2  # neither OUT nor --as-default
    assert "either an output path" in capsys.readouterr().err
    # ... but never into an installed package (site-packages): that is not the user's file to change.
    installed = tmp_path / "venv" / "lib" / "site-packages" / "digitlab" / "assets" / "default.pt"
    monkeypatch.setattr(predictor_mod, "default_model_path", lambda must_exist=True: installed)
    assert main(["export", str(out), "--as-default", "--full"]) == 2
    err = capsys.readouterr().err
    assert "would overwrite the installed package's model" in err and "--model model.pt" in err
    assert not installed.exists()


@pytest.mark.parametrize("preset", CIFAR_PRESETS)
def test_train_dry_run_cifar_preset_then_eval(preset, tmp_path, isolated_data_env, capsys):
    data_dir = tmp_path / "data"
    tiny_cifar(data_dir, n=8)  # 40 train, 8 test images
    runs = tmp_path / "runs"
    rc = main(
        [
            "train",
            "--preset",
            preset,
            "--dry-run",
            "--data-dir",
            str(data_dir),
            "--no-download",
            "--runs-dir",
            str(runs),
            "--name",
            "c",
            "-q",
        ]
    )
    assert rc == 0
    assert "final test accuracy" in capsys.readouterr().out
    ckpt = _run_files_ok(runs / "c")
    want = apply_preset(RunConfig(), preset)
    assert ckpt["model_name"] == want.model.model
    assert ckpt["dataset"] == "cifar10" and ckpt["task"] == "images"
    assert ckpt["channels"] == 3 and ckpt["image_size"] == 32 and len(ckpt["classes"]) == 10
    assert ckpt["config"]["data"]["augment"] == want.data.augment

    assert main(["eval", str(runs / "c"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["dataset"] == "cifar10" and 0.0 <= metrics["accuracy"] <= 1.0
    assert "airplane" in (runs / "c" / "report.txt").read_text()


# --- experiment -----------------------------------------------------------------------------------------


def test_experiment_permuted(mnist_dir, isolated_data_env, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "perm"
    rc = main(
        [
            "experiment",
            "permuted",
            "--data-dir",
            str(mnist_dir),
            "--no-download",
            "--limit-train",
            "1000",
            "--limit-test",
            "500",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "1000 train, 500 test images; 4 runs of 1 epoch(s)" in text
    assert "mlp" in text and "cnn-small" in text and "normal" in text and "permuted" in text
    result = json.loads((out / "permuted.json").read_text())
    assert set(result["table"]) == {"mlp", "cnn-small"}
    for row in result["table"].values():
        assert set(row) == {"normal", "permuted"} and all(0.0 <= v <= 1.0 for v in row.values())
    assert (out / "permuted.png").is_file()


# --- an image folder, the way seed 004 lays it out: root/train/<class>/*.png, root/test/<class>/*.png ---


def _digit_folder(root: Path, per_class: dict[str, int]) -> Path:
    """Gray 28x28 PNGs whose class is a bright 8x8 block at a class-dependent place."""
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for c in range(10):
            (root / split / str(c)).mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 40, (28, 28), dtype=np.uint8)
                r, col = 2 + 6 * (c // 4), 2 + 6 * (c % 4)
                a[r : r + 8, col : col + 8] = 255
                Image.fromarray(a, mode="L").save(root / split / str(c) / f"{i}.png")
    return root


def test_image_folder_train_eval_predict(tmp_path, isolated_data_env, capsys):
    root = _digit_folder(tmp_path / "digit_data", {"train": 6, "test": 2})
    runs = tmp_path / "runs"
    rc = main(
        [
            "train",
            "--dataset",
            str(root),
            "--model",
            "cnn-004",
            "--epochs",
            "1",
            "--runs-dir",
            str(runs),
            "--name",
            "f",
            "-q",
        ]
    )
    assert rc == 0
    assert f"run directory: {runs / 'f'}" in capsys.readouterr().out
    ckpt = _run_files_ok(runs / "f")
    assert ckpt["model_name"] == "cnn-004" and ckpt["classes"] == [str(c) for c in range(10)]
    assert ckpt["channels"] == 1 and ckpt["image_size"] == 28 and ckpt["epoch"] == 1
    assert ckpt["task"] == "digits"  # gray, classes 0..9: a digit model
    assert len(_csv_rows(runs / "f" / "metrics.csv")) == 1

    assert main(["eval", str(runs / "f"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["dataset"] == ckpt["dataset"] and 0.0 <= metrics["accuracy"] <= 1.0
    assert "on 20 samples" in (runs / "f" / "report.txt").read_text()  # root/test: 10 classes x 2

    image = str(root / "test" / "3" / "0.png")
    rc = main(["predict", image, "--model", str(runs / "f"), "--json", "--single"])
    assert rc == 0
    preds = json.loads(capsys.readouterr().out)
    assert len(preds) == 1 and preds[0]["status"] in ("ok", "uncertain"), preds  # 1 epoch on 60 images: unsure
    assert preds[0]["text"] in ckpt["classes"] and len(preds[0]["items"][0]["probs"]) == 10

    # one unreadable file: its own error line, the others still read, exit code 1
    rc = main(["predict", image, str(tmp_path / "nope.png"), "--model", str(runs / "f"), "--single"])
    assert rc == 1
    captured = capsys.readouterr()
    assert "nope.png" in captured.err and "Traceback" not in captured.err
    assert "0.png" in captured.out


# --- serve without a server -------------------------------------------------------------------------------


def test_serve_rejects_bad_log_level(capsys):
    assert main(["serve", "--log-level", "loud"]) == 2
    assert "unknown log level 'loud'" in capsys.readouterr().err


def test_serve_on_a_busy_port_fails_before_saying_it_serves(capsys, monkeypatch):
    """A port in use is one error line, before the model loads and before "serving on ..." is printed."""
    import socket

    import digitlab.web.app

    def must_not_load(**kw):
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr(digitlab.web.app, "create_app", must_not_load)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert f"port {port} on 127.0.0.1 is in use" in err and "serving on" not in out
