"""resolve(): every "auto" decided once, normalisation options, presets, image folders stored resolved."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import FrozenInstanceError, replace

import pytest
import torch
from PIL import Image

from digitlab.cli import main
from digitlab.config import RunConfig
from digitlab.engine.checkpoint import load_checkpoint
from digitlab.engine.dist import DistInfo
from digitlab.engine.plan import normalization, resolve
from digitlab.engine.presets import apply_preset
from digitlab.engine.train import train
from digitlab.errors import DigitlabError


def small_cfg(tmp_path, **train_kw) -> RunConfig:
    cfg = RunConfig(name="run", runs_dir=str(tmp_path))
    cfg.model.model, cfg.model.width = "mlp", 16
    for k, v in {"epochs": 1, "batch_size": 64, "lr": 0.05, **train_kw}.items():
        setattr(cfg.train, k, v)
    return cfg


def test_resolve_decides_every_auto_once(tmp_path, tiny_data):
    cfg = small_cfg(tmp_path)
    assert (cfg.train.device, cfg.train.precision, cfg.data.augment) == ("auto", "auto", "auto")
    plan = resolve(cfg, replace(tiny_data(), name="mnist"), "cpu", DistInfo())
    assert plan.device == torch.device("cpu") and plan.precision in ("fp32", "bf16")
    assert plan.augment == "shift" and plan.tta  # MNIST's default augmentation, so shifted views at the end
    assert plan.config.train.device == "cpu" and plan.config.train.precision == plan.precision
    assert plan.config.data.augment == "shift"
    assert cfg.train.device == "auto" and cfg.data.augment == "auto"  # the given config is left as it was
    assert plan.model_args == {"num_classes": 10, "in_channels": 1, "image_size": 28, "hidden": 16}
    assert plan.steps_per_epoch == 4 and plan.total_steps == 4  # 256 images in batches of 64, one epoch
    with pytest.raises(FrozenInstanceError):
        plan.precision = "fp16"  # type: ignore[misc]
    no_aug = resolve(cfg, tiny_data(), "cpu", DistInfo())  # an unknown dataset trains without augmentation
    assert no_aug.augment == "none" and not no_aug.tta


def test_resolve_refuses_bad_values_before_any_work(tmp_path, tiny_data):
    with pytest.raises(DigitlabError, match="--epochs must be"):
        resolve(small_cfg(tmp_path, epochs=0), tiny_data(), "cpu")
    cfg = small_cfg(tmp_path)
    cfg.data.normalize = "zscore"
    with pytest.raises(DigitlabError, match="unknown normalization .zscore.; choose one of: 0.5, dataset, none"):
        resolve(cfg, tiny_data(), "cpu")
    assert not any(tmp_path.iterdir())


def test_config_json_records_the_resolved_plan(tmp_path, tiny_data):
    res = train(small_cfg(tmp_path), data=tiny_data(), quiet=True)
    saved = json.loads((res.run_dir / "config.json").read_text())
    assert saved["train"]["device"] == "cpu" and saved["train"]["precision"] in ("fp32", "bf16")
    assert saved["data"]["augment"] == "none"
    assert load_checkpoint(res.run_dir / "last.pt")["config"]["train"]["precision"] == saved["train"]["precision"]


def test_train_runs_a_plan_resolved_beforehand(tmp_path, tiny_data):
    data = tiny_data()
    plan = resolve(small_cfg(tmp_path, precision="fp32", epochs=4, lr=0.1), data, "cpu")
    res = train(plan, data, quiet=True)
    assert res.final_acc > 0.3 and (res.run_dir / "eval.json").exists()
    with pytest.raises(ValueError, match="pass them"):
        train(plan)


@pytest.mark.parametrize(
    "kind,mean,std", [("dataset", (0.2,), (0.3,)), ("0.5", (0.5,), (0.5,)), ("none", (0.0,), (1.0,))]
)
def test_normalization_options(tiny_data, kind, mean, std):
    assert normalization(kind, tiny_data()) == (mean, std)


def test_raw_pixel_training_stores_its_normalisation_for_predict(tmp_path, tiny_data):
    """A run that fed raw pixels saves mean 0 / std 1, so predict feeds the model what it trained on."""
    from digitlab.data.loader import normalize
    from digitlab.engine.checkpoint import model_from_checkpoint

    cfg = small_cfg(tmp_path, precision="fp32")
    cfg.data.normalize = "none"
    data = tiny_data()
    res = train(cfg, data=data, quiet=True)
    ckpt = load_checkpoint(res.run_dir / "last.pt")
    assert (ckpt["mean"], ckpt["std"]) == ([0.0], [1.0])
    x = normalize(data.test_x, ckpt["mean"], ckpt["std"])
    assert torch.allclose(x, data.test_x.float() / 255)  # exactly ToTensor()'s input
    model = model_from_checkpoint(ckpt)
    with torch.no_grad():
        acc = (model(x).argmax(1) == data.test_y).float().mean().item()
    assert acc == pytest.approx(res.final_acc)


def test_seed_presets_normalise_as_the_tutorials_did():
    norm = {name: apply_preset(RunConfig(), name).data.normalize for name in ("seed000", "seed001", "seed002-cifar")}
    assert norm == {"seed000": "dataset", "seed001": "none", "seed002-cifar": "0.5"}
    assert all(apply_preset(RunConfig(), n).data.normalize == "none" for n in ("seed003", "seed004"))
    fp32 = apply_preset(RunConfig(), "seed001")
    fp32.train.precision = "fp32"  # a preset (or a flag over it) can pin the precision; the plan obeys
    assert resolve(fp32, _mnist_shaped(), "cpu").precision == "fp32"


def _mnist_shaped():
    x = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    y = torch.arange(8) % 2
    from digitlab.data.base import ImageData

    return ImageData("mnist", x, y, x, y, [str(i) for i in range(10)], (0.13,), (0.31,))


def _image_folder(root, per_class: int = 12) -> None:
    g = torch.Generator().manual_seed(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = torch.randint(0, 40, (16, 16), generator=g, dtype=torch.uint8)
            if c == "a":
                arr[2:8, 2:8] = 255
            else:
                arr[8:14, 8:14] = 255
            Image.fromarray(arr.numpy()).save(root / c / f"{i}.png")


def test_image_folder_runs_work_from_another_directory(tmp_path, monkeypatch, capsys):
    """The folder is stored by absolute path: eval and --resume work from elsewhere; a moved folder is named."""
    work, other = tmp_path / "work", tmp_path / "elsewhere"
    _image_folder(work / "digit_data")
    other.mkdir()
    monkeypatch.chdir(work)
    args = ["train", "--dataset", "./digit_data", "--model", "mlp", "--epochs", "1", "--batch-size", "8"]
    assert main(args + ["--runs-dir", str(tmp_path / "runs"), "--name", "f", "-q"]) == 0
    run = tmp_path / "runs" / "f"
    stored = json.loads((run / "config.json").read_text())["data"]["dataset"]
    assert stored == str((work / "digit_data").resolve()) and os.path.isabs(stored)
    assert load_checkpoint(run / "best.pt")["dataset"] == stored

    monkeypatch.chdir(other)
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"] == stored
    assert main(["train", "--resume", str(run), "--epochs", "2", "-q"]) == 0

    shutil.move(str(work / "digit_data"), str(tmp_path / "moved"))
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    assert f"image folder {stored} no longer exists" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--epochs", "3", "-q"]) == 2
    assert "no longer exists" in capsys.readouterr().err
