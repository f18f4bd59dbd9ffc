"""The registry: names, model_info, and models of your own given as package.module:ClassName."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from digitlab.cli import main
from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from digitlab.errors import DigitlabError
from digitlab.models import create_model, is_import_path, list_models, model_info

TINY_NET = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """A test's own network: one conv, global average pooling, a linear head."""

    def __init__(self, num_classes, in_channels, image_size, width=4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.head = nn.Linear(width, num_classes)
        self.image_size = image_size

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class NoShape(nn.Module):
    def __init__(self, num_classes):
        super().__init__()


def not_a_module(num_classes, in_channels, image_size):
    return 42
'''


@pytest.fixture
def my_module(tmp_path, monkeypatch, request) -> str:
    """A module written by the test into tmp_path and put on sys.path; its (unique) name."""
    name = f"mynets_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / f"{name}.py").write_text(textwrap.dedent(TINY_NET))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    return name


def test_model_info_of_registered_names():
    info = model_info("cnn")
    assert info.name == "cnn" and not info.imported
    assert info.description.startswith("seed 000") and "tutorial" in info.description
    assert info.seed_keys["features.0"] == "conv1"
    names = [m.name for m in list_models()]
    assert names.index("cnn-small") < names.index("cnn") < names.index("cnn-k")  # registration order in cnn.py
    with pytest.raises(DigitlabError, match="unknown model 'nope'"):
        model_info("nope")


def test_every_seed_model_says_which_tutorial():
    for m in list_models():
        assert m.description.startswith(("seed 00", "digitlab", "deeper", "airbench")), m.name
        if m.description.startswith("seed"):
            assert "(" in m.description.split(":")[0], m.name  # "seed 002 (CIFAR-10 part): ..."


def test_import_path_builds_the_users_class(my_module):
    path = f"{my_module}:TinyNet"
    assert is_import_path(path) and not is_import_path("fast")
    info = model_info(path)
    assert info.imported and info.description.startswith("A test's own network")
    model = create_model(path, num_classes=3, in_channels=1, image_size=8, width=2)
    assert model(torch.zeros(5, 1, 8, 8)).shape == (5, 3)
    assert type(model).__module__ == my_module


@pytest.mark.parametrize(
    "path,message",
    [
        ("no_such_module_xyz:Net", "cannot import 'no_such_module_xyz'"),
        ("{mod}:Missing", "has no class or function 'Missing'"),
        ("{mod}:NoShape", "lacks in_channels, image_size"),
        ("{mod}:not_a_module", "returned a int, not a torch.nn.Module"),
        ("a:b:c", "write it as package.module:ClassName"),
    ],
)
def test_import_path_errors_are_one_line(my_module, path, message):
    with pytest.raises(DigitlabError, match=message) as exc:
        create_model(path.format(mod=my_module), num_classes=10, in_channels=1, image_size=8)
    assert "\n" not in str(exc.value)


def test_import_error_from_the_cli_is_exit_2(capsys):
    assert main(["summary", "no_such_module_xyz:Net"]) == 2
    err = capsys.readouterr().err
    assert "cannot import 'no_such_module_xyz'" in err and "Traceback" not in err


def _folder(root, n: int):
    """Gray 28x28 PNGs, class 0 dark with a bright top-left block, class 1 a bright bottom-right one."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(2):
            (root / split / str(c)).mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 40, (28, 28), dtype=np.uint8)
                r = 4 if c == 0 else 16
                a[r : r + 8, r : r + 8] = 255
                Image.fromarray(a, mode="L").save(root / split / str(c) / f"{i}.png")
    return root


@pytest.mark.slow
def test_your_own_network_trains_predicts_and_evaluates(my_module, tmp_path, isolated_data_env, capsys):
    root = _folder(tmp_path / "pics", 8)
    runs = tmp_path / "runs"
    path = f"{my_module}:TinyNet"
    argv = ["train", "--dataset", str(root), "--model", path, "--epochs", "2", "--lr", "0.05"]
    argv += ["--width", "3", "--runs-dir", str(runs), "--name", "mine", "-q", "--threads", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    ckpt = load_checkpoint(runs / "mine")
    assert ckpt["model_name"] == path  # the import path, so the checkpoint rebuilds the class
    assert ckpt["model_args"] == {"num_classes": 2, "in_channels": 1, "image_size": 28, "width": 3}
    model = model_from_checkpoint(ckpt)
    assert type(model).__name__ == "TinyNet" and model.conv.out_channels == 3

    assert main(["eval", str(runs / "mine"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["dataset"] == ckpt["dataset"]

    image = str(root / "test" / "1" / "0.png")
    assert main(["predict", image, "--model", str(runs / "mine"), "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert preds[0]["status"] in ("ok", "uncertain") and preds[0]["text"] in ("0", "1")
    assert len(preds[0]["items"][0]["probs"]) == 2

    # export: the slim checkpoint and the ONNX graph rebuild and run the same class
    assert main(["export", str(runs / "mine"), str(tmp_path / "mine.pt"), "--no-calibrate"]) == 0
    assert load_checkpoint(tmp_path / "mine.pt")["model_name"] == path
    assert main(["export", str(runs / "mine"), str(tmp_path / "mine.onnx"), "--format", "onnx"]) == 0
    assert f"{root.name} test images: max abs logit difference" in capsys.readouterr().out
    for model_file in ("mine.pt", "mine.onnx"):
        assert main(["predict", image, "--model", str(tmp_path / model_file), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["items"][0]["probs"] == pytest.approx(
            preds[0]["items"][0]["probs"], abs=1e-3
        )

    # serve: the web app loads it like any checkpoint
    from fastapi.testclient import TestClient

    from digitlab.web.app import create_app

    with TestClient(create_app(checkpoint=runs / "mine", processes=0)) as c:
        r = c.post("/api/predict", files={"file": ("1.png", (root / "test" / "1" / "0.png").read_bytes(), "image/png")})
    assert r.status_code == 200 and r.json()["text"] == preds[0]["text"]
