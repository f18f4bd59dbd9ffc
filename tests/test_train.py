"""The training loop: schedules, optimizers, checkpoints written, resume equivalence, interrupts."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_image_data as tiny_data
from digitlab.config import RunConfig, TrainConfig
from digitlab.engine import train as train_mod
from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from digitlab.engine.optim import build_optimizer, lr_at
from digitlab.engine.train import evaluate, train
from digitlab.errors import DigitlabError


def cfg_for(tmp_path, **train_kw) -> RunConfig:
    cfg = RunConfig(name="run", runs_dir=str(tmp_path))
    cfg.model.model = "mlp"
    cfg.model.width = 32
    cfg.data.augment = "none"
    for k, v in {"epochs": 4, "batch_size": 32, "lr": 0.05, "device": "cpu", **train_kw}.items():
        setattr(cfg.train, k, v)
    return cfg


def test_lr_schedules_shape():
    t = TrainConfig(lr=1.0, epochs=2, schedule="onecycle", warmup=0.25)
    lrs = [lr_at(s, 100, t) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0, abs=0.02)
    assert lrs.index(max(lrs)) == 25 and lrs[-1] < 0.05
    t.schedule = "step"
    t.gamma = 0.5
    assert [lr_at(s, 100, t) for s in (0, 49, 50, 99)] == [1.0, 1.0, 0.5, 0.5]
    t.schedule = "cosine"
    assert lr_at(0, 100, t) == 1.0 and lr_at(50, 100, t) == pytest.approx(0.5)
    t.schedule = "none"
    assert lr_at(77, 100, t) == 1.0


def test_unknown_optimizer_and_schedule_list_valid_names():
    m = torch.nn.Linear(2, 2)
    with pytest.raises(DigitlabError, match="adadelta"):
        build_optimizer(m, TrainConfig(optimizer="lbfgs"))
    with pytest.raises(DigitlabError, match="onecycle"):
        build_optimizer(m, TrainConfig(schedule="poly"))


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "adadelta"])
def test_each_optimizer_learns(tmp_path, opt):
    lr = {"sgd": 0.05, "adam": 0.003, "adamw": 0.003, "adadelta": 1.0}[opt]
    res = train(cfg_for(tmp_path, optimizer=opt, lr=lr, epochs=3), data=tiny_data(), quiet=True)
    assert res.final_acc > 0.5, res.history


def test_run_directory_contents(tmp_path):
    res = train(cfg_for(tmp_path, epochs=2), data=tiny_data(), quiet=True)
    run = res.run_dir
    for f in (
        "config.json",
        "metrics.csv",
        "last.pt",
        "best.pt",
        "curves.png",
        "confusion.png",
        "errors.png",
        "report.txt",
        "eval.json",
    ):
        assert (run / f).exists(), f
    lines = (run / "metrics.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch,lr,train_loss,train_acc,test_loss,test_acc")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["epochs"] == 2 and "provenance" in cfg
    # best.pt rebuilds the model alone and reproduces the reported accuracy
    ckpt = load_checkpoint(run / "best.pt")
    assert "optimizer" not in ckpt  # inference checkpoints stay small
    data = tiny_data()
    out = evaluate(model_from_checkpoint(ckpt), data.test_x, data.test_y, data.mean, data.std)
    assert out.accuracy == pytest.approx(ckpt["metrics"]["test_acc"])
    raw = torch.load(run / "last.pt", weights_only=True)
    assert raw["epoch"] == 2 and "optimizer" in raw and "rng" in raw


def test_existing_run_is_not_overwritten(tmp_path):
    train(cfg_for(tmp_path, epochs=1), data=tiny_data(), quiet=True)
    with pytest.raises(DigitlabError, match="--resume"):
        train(cfg_for(tmp_path, epochs=1), data=tiny_data(), quiet=True)


MUON = {"optimizer": "muon", "lr": 0.24, "momentum": 0.6, "weight_decay": 8e-6, "warmup": 0.0}


@pytest.mark.parametrize(
    "model,kw,aug", [("mlp", {}, "shift"), ("cnn", {"ema": True}, "shift"), ("fast-cifar-cpu", MUON, "flip-translate")]
)
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, model, kw, aug):
    """Stop after epoch 2 of 4 (Ctrl-C), resume: same weights and metrics as a run never stopped."""
    data = tiny_data(n_train=128, n_test=32)
    full_cfg = cfg_for(tmp_path / "full", **kw)
    full_cfg.model.model, full_cfg.data.augment = model, aug
    if model != "mlp":
        full_cfg.model.width = None
    full = train(full_cfg, data=data, quiet=True)

    cfg = cfg_for(tmp_path / "cut", **kw)
    cfg.model.model, cfg.data.augment, cfg.model.width = full_cfg.model.model, aug, full_cfg.model.width
    real_epoch = train_mod.train_one_epoch
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_epoch(*a, **k)

    monkeypatch.setattr(train_mod, "train_one_epoch", flaky)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, data=data, quiet=True)
    monkeypatch.setattr(train_mod, "train_one_epoch", real_epoch)
    state = load_checkpoint(tmp_path / "cut" / "run", default_name="last.pt")
    assert state["epoch"] == 2
    resumed = train(RunConfig.from_dict(state["config"]), data=data, resume=state, quiet=True)

    a = load_checkpoint(full.run_dir / "last.pt")["state_dict"]
    b = load_checkpoint(resumed.run_dir / "last.pt")["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    for ra, rb in zip(full.history, resumed.history, strict=True):
        assert ra["epoch"] == rb["epoch"]
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)
        assert ra["test_acc"] == pytest.approx(rb["test_acc"])


def test_a_finished_run_is_calibrated_and_an_unfinished_one_is_not(tmp_path):
    """The last epoch's checkpoints carry a temperature fitted on the evaluation split (one view per
    image), best.pt too when it is from an earlier epoch; it lowers that split's NLL, as fitted."""
    from digitlab.evaluate.calibration import nll
    from digitlab.inference.predictor import CALIBRATED_UNCERTAIN_BELOW, Predictor

    data = tiny_data()
    res = train(cfg_for(tmp_path, epochs=4, label_smoothing=0.1), data=data, quiet=True)
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(res.run_dir / name)
        t = ckpt["temperature"]
        logits = evaluate(model_from_checkpoint(ckpt), data.test_x, data.test_y, data.mean, data.std).logits
        assert 0.05 < t < 20 and nll(logits, data.test_y, t) <= nll(logits, data.test_y) + 1e-6, name
    assert Predictor.load(res.run_dir).uncertain_below == CALIBRATED_UNCERTAIN_BELOW
    cut = train(cfg_for(tmp_path / "cut", dry_run=True), data=data, quiet=True)  # stopped after one epoch of 4
    assert "temperature" not in load_checkpoint(cut.run_dir / "last.pt")


def test_dry_run_stops_early(tmp_path):
    res = train(cfg_for(tmp_path, dry_run=True), data=tiny_data(), quiet=True)
    assert len(res.history) == 1


def test_bf16_training_runs_and_learns(tmp_path):
    res = train(cfg_for(tmp_path, precision="bf16", epochs=3), data=tiny_data(), quiet=True)
    assert res.final_acc > 0.5


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_ddp_two_processes_on_cpu(tmp_path):
    """torchrun with 2 CPU processes (gloo): one run directory, one final line, a usable checkpoint."""
    import subprocess
    import sys
    import warnings

    def run(name: str) -> subprocess.CompletedProcess:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "digitlab",
            "train",
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--width",
            "32",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--lr",
            "0.1",
            "--runs-dir",
            str(tmp_path),
            "--name",
            name,
            "-q",
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    name, out = "ddp", run("ddp")
    if out.returncode != 0 and "SIGABRT" in out.stderr:
        # One retry, for this symptom only: a rank aborting with SIGABRT has an unknown, rare cause.
        # The first attempt's output goes to the warnings summary; a second abort, or any other
        # failure, fails the test.
        warnings.warn("DDP run aborted (SIGABRT); retried once. First attempt:\n" + out.stderr[:3000], stacklevel=1)
        name, out = "ddp-retry", run("ddp-retry")
    # The ranks' own messages come first, the launcher's traceback last: show both ends.
    assert out.returncode == 0, out.stderr[:3000] + "\n...\n" + out.stderr[-1500:]
    assert out.stdout.count("final test accuracy") == 1
    ckpt = load_checkpoint(tmp_path / name / "best.pt")
    assert ckpt["epoch"] >= 1 and ckpt["metrics"]["test_acc"] > 0.7  # it learned (93-95% over 4 seeds; chance is 10%)


def test_compile_happens_before_the_clock_and_changes_nothing(tmp_path, monkeypatch, cpp_compiler):
    """--compile: every batch size is compiled in the warm-up, none during training, and the warm-up
    leaves weights, BatchNorm statistics and RNG as they were (same weights as without --compile)."""
    from torch._dynamo.utils import counters

    data = tiny_data(n_train=100, n_test=32)  # batches of 32 and a last one of 4: two shapes
    graphs = {}
    real = train_mod.compile_for_training

    def spy(*a, **k):
        out = real(*a, **k)
        graphs["after_warm_up"] = counters["stats"]["unique_graphs"]
        return out

    monkeypatch.setattr(train_mod, "compile_for_training", spy)
    runs = {}
    for compiled in (False, True):
        # fp32: under bf16 autocast compiled and eager kernels round differently, which is not what this checks
        cfg = cfg_for(tmp_path / str(compiled), epochs=2, compile=compiled, precision="fp32")
        cfg.model.model, cfg.model.width, cfg.data.augment = "fast", 8, "shift"  # BatchNorm, augmentation
        runs[compiled] = train(cfg, data=data, quiet=True)
    assert counters["stats"]["unique_graphs"] == graphs["after_warm_up"]  # nothing compiled while training
    assert runs[True].compile_seconds > 0 and runs[False].compile_seconds == 0
    assert [h["compile_time"] > 0 for h in runs[True].history] == [True, False]
    a = load_checkpoint(runs[False].run_dir / "last.pt")["state_dict"]
    b = load_checkpoint(runs[True].run_dir / "last.pt")["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4, msg=k)


def test_compiled_optimizer_step_matches_eager_and_follows_the_schedule():
    from torch._dynamo.utils import counters

    from digitlab.engine.optim import compiled_step, set_lr

    def run(compiled: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 3)
        opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
        step = compiled_step(opt) if compiled else opt.step
        t = TrainConfig(lr=1.0, epochs=4, schedule="step", gamma=0.7)  # seed 000's step schedule, one step an epoch
        for i in range(4):
            assert set_lr(opt, i, 4, t) == pytest.approx(0.7**i)
            opt.zero_grad()
            model(torch.randn(5, 6)).pow(2).sum().backward()
            step()
        assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.7**3)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    counters.clear()
    assert torch.allclose(run(True), run(False), atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1  # four learning rates, one compiled graph


def test_compiled_step_hides_only_dynamos_profiler_note():
    import logging

    from digitlab.engine.optim import _NO_PROFILER_NOTE, compiled_step

    opt = torch.optim.Adadelta(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    compiled_step(opt)
    logger = logging.getLogger("torch._dynamo.variables.ctx_manager")
    assert _NO_PROFILER_NOTE in logger.filters
    note = logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, "Profiler record function %s will be ignored", ("f",), None
    )
    other = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "graph break in %s", ("f",), None)
    assert not logger.filter(note) and logger.filter(other)


def test_tta_at_the_final_evaluation_only_after_augmented_training(tmp_path):
    from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from digitlab.engine.train import evaluate, trained_with_tta

    data = tiny_data()
    assert RunConfig().train.tta  # the default recipe averages shifted views at the end
    plain = train(cfg_for(tmp_path / "a"), data=data, quiet=True)
    assert not plain.tta  # trained without augmentation: views it never saw would only blur it
    cfg = cfg_for(tmp_path / "b", epochs=2, precision="fp32")
    cfg.data.augment = "shift"
    shifted = train(cfg, data=data, quiet=True)
    assert shifted.tta
    model = model_from_checkpoint(load_checkpoint(tmp_path / "b" / "run" / "last.pt"))
    args = (data.test_x, data.test_y, data.mean, data.std)
    with_views, without = evaluate(model, *args, tta=True), evaluate(model, *args, tta=False)
    assert shifted.final_acc == with_views.accuracy
    assert trained_with_tta(load_checkpoint(tmp_path / "b" / "run" / "last.pt"))  # `digitlab eval` follows it
    assert not trained_with_tta(load_checkpoint(tmp_path / "a" / "run" / "last.pt"))
    final_loss = shifted.history[-1]["test_loss"]
    assert final_loss == pytest.approx(with_views.loss, rel=1e-4) and final_loss != pytest.approx(
        without.loss, rel=1e-4
    )


def test_flip_translate_training_mirrors_each_image_the_other_way_every_epoch(tmp_path, monkeypatch):
    """airbench's alternating flip, in the loop: an image mirrored in one epoch is not in the next."""
    data = tiny_data(n_train=96, n_test=16)
    index_of = {bytes(img.numpy()): i for i, img in enumerate(data.train_x)}
    seen: dict[int, list[tuple[int, bool]]] = {}  # epoch -> (image index, mirrored)
    real_augment = train_mod.augment

    def recording(x, kind, generator=None, labels=None, flip=None):
        assert kind == "flip-translate" and flip is not None
        epoch = len(seen) - 1 if seen and len(seen[len(seen) - 1]) < len(data.train_x) else len(seen)
        seen.setdefault(epoch, []).extend(
            (index_of[bytes(img.numpy())], bool(f)) for img, f in zip(x, flip, strict=True)
        )
        return real_augment(x, kind, generator, labels=labels, flip=flip)

    monkeypatch.setattr(train_mod, "augment", recording)
    cfg = cfg_for(tmp_path, epochs=3)
    cfg.data.augment = "flip-translate"
    train(cfg, data=data, quiet=True)
    flips = [dict(seen[e]) for e in range(3)]
    assert all(sorted(f) == list(range(len(data.train_x))) for f in flips)  # every image once an epoch
    assert all(flips[1][i] != flips[0][i] and flips[2][i] == flips[0][i] for i in flips[0])
    assert 20 < sum(flips[0].values()) < 76  # about half start mirrored
