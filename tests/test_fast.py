"""The fast path: digitlab's fast models, bf16 vs fp32 training, bf16-trained weights evaluated in fp32."""

from __future__ import annotations

import pytest
import torch

from digitlab.config import RunConfig
from digitlab.engine.presets import PRESETS, apply_preset
from digitlab.models import create_model
from digitlab.models.layers import as_the_seed_wrote_it

FAST = [("fast", 1, 28), ("fast-wide", 1, 28), ("fast-cifar", 3, 32)]


@pytest.mark.parametrize("name,channels,size", FAST)
def test_fast_models_shapes_fp32_bf16_channels_last(name, channels, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=channels, image_size=size)
    x = torch.randn(4, channels, size, size)
    out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    model = model.to(memory_format=torch.channels_last).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = model(x.contiguous(memory_format=torch.channels_last))
    assert out16.shape == (4, 10) and torch.isfinite(out16.float()).all()
    # BatchNorm keeps fp32 statistics under autocast.
    assert all(m.running_mean.dtype == torch.float32 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_fast_width_knob_and_other_sizes():
    small = create_model("fast", num_classes=10, in_channels=1, image_size=28, width=8)
    big = create_model("fast", num_classes=10, in_channels=1, image_size=28, width=32)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in big.parameters())
    m = create_model("fast", num_classes=3, in_channels=3, image_size=32)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(TypeError):
        create_model("fast", num_classes=10, in_channels=1, image_size=28, widht=8)


@pytest.mark.parametrize("name", ["fast", "fast-wide"])
def test_pool_late_order_of_old_checkpoints_has_their_outputs_and_gradients(name):
    # pool_early=False is the order of format-1 checkpoints; it runs the pool before the ReLU (exact).
    torch.manual_seed(0)
    new = create_model(name, width=8)
    late = create_model(name, width=8, pool_early=False)
    old = as_the_seed_wrote_it(create_model(name, width=8, pool_early=False))  # conv, BN, ReLU, pool
    old.load_state_dict(late.state_dict())
    kinds = [type(m).__name__ for m in new.features]
    assert kinds[kinds.index("MaxPool2d") - 1 : kinds.index("MaxPool2d") + 2] == ["Conv2d", "MaxPool2d", "BatchNorm2d"]
    assert [type(m).__name__ for m in late.features][kinds.index("MaxPool2d") + 1 :][:2] == ["MaxPool2d", "ReLU"]
    assert [type(m).__name__ for m in old.features][kinds.index("MaxPool2d") + 1 :][:2] == ["ReLU", "MaxPool2d"]
    assert set(late.state_dict()) != set(new.state_dict())  # pool-late weights never load as pool-early
    x = torch.randn(8, 1, 28, 28)
    out, ref = late(x), old(x)
    assert torch.equal(out, ref)
    out.square().sum().backward(), ref.square().sum().backward()
    for p, q in zip(late.parameters(), old.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)


def test_format_1_checkpoints_of_fast_nets_load_in_their_own_order():
    from digitlab.engine.checkpoint import model_from_checkpoint

    args = {"num_classes": 10, "in_channels": 1, "image_size": 28, "width": 8}
    x = torch.randn(4, 1, 28, 28)
    for version, pool_early in ((1, False), (2, True)):
        m = create_model("fast", **args, pool_early=pool_early).eval()
        ckpt = {"digitlab": version, "model_name": "fast", "model_args": args, "state_dict": m.state_dict()}
        assert torch.equal(model_from_checkpoint(ckpt)(x), m(x))


def test_fast_presets_exist_and_default_is_fast():
    for name in ("fast", "fast-99.5", "best", "cifar-fast"):
        assert name in PRESETS
    cfg = RunConfig()
    fast = apply_preset(RunConfig(), "fast")
    # Plain `digitlab train` runs the `fast` recipe.
    for section in ("data", "model", "train"):
        for k, v in getattr(PRESETS["fast"], section).items():
            if (section, k) == ("model", "width"):
                assert getattr(cfg.model, k) in (None, v)  # None: the constructor default, which is the same
                continue
            if (section, k) == ("data", "augment"):
                assert cfg.data.augment in ("auto", v)  # auto is shift on MNIST
                continue
            assert getattr(cfg, section).__dict__[k] == v, (section, k)
    assert fast.model.model == "fast"


def _short_run(data, precision: str, tmp_path):
    from digitlab.engine.train import train

    cfg = apply_preset(RunConfig(runs_dir=str(tmp_path), name=precision), "fast")
    # Small data needs more, smaller steps than the full-data recipe.
    cfg.train.precision, cfg.train.epochs, cfg.train.batch_size, cfg.train.lr = precision, 2, 32, 0.05
    cfg.train.device, cfg.train.seed = "cpu", 0
    return train(cfg, data=data, quiet=True)


def test_bf16_and_fp32_training_agree_and_bf16_weights_evaluate_in_fp32(mnist_dir, tmp_path):
    from digitlab.data import load_dataset
    from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from digitlab.engine.train import evaluate

    data = load_dataset("mnist", str(mnist_dir), download=False).subset(4000, 1000)
    r32 = _short_run(data, "fp32", tmp_path)
    r16 = _short_run(data, "bf16", tmp_path)
    assert r32.final_acc > 0.9 and r16.final_acc > 0.9
    assert abs(r32.final_acc - r16.final_acc) < 0.03

    # The bf16-trained model, rebuilt from its checkpoint, evaluates the same in fp32 (the reference path).
    model = model_from_checkpoint(load_checkpoint(r16.run_dir / "best.pt"))
    fp32 = evaluate(model, data.test_x, data.test_y, data.mean, data.std, precision="fp32")
    bf16 = evaluate(model, data.test_x, data.test_y, data.mean, data.std, precision="bf16", channels_last=True)
    assert abs(fp32.accuracy - r16.best_acc) < 0.01
    assert abs(fp32.accuracy - bf16.accuracy) < 0.01
    agree = (fp32.logits.argmax(1) == bf16.logits.argmax(1)).float().mean().item()
    assert agree > 0.98
