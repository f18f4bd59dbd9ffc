"""airbench's CIFAR-10 nets (models/cifar_fast.py): whitening stem, frozen BN scales, Dirac init, logit scale."""

from __future__ import annotations

import torch

from conftest import tiny_image_data
from digitlab.config import RunConfig
from digitlab.data.loader import normalize
from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from digitlab.engine.presets import apply_preset
from digitlab.engine.train import train
from digitlab.models import create_model


def test_init_from_data_whitens_the_patches():
    torch.manual_seed(0)
    mix = torch.tensor([[1.0, 0.9, 0.8], [0.0, 0.3, 0.1], [0.0, 0.0, 0.2]])
    x = torch.einsum("ij,njhw->nihw", mix, torch.randn(200, 3, 16, 16))  # correlated channels
    x = x + x.roll(1, -1)  # and correlated neighbours
    model = create_model("fast-cifar-cpu", width=8)
    model.init_from_data(x)
    out = model[0](x) - model[0].bias.view(1, -1, 1, 1)  # (N, 24, 15, 15)
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    cov = half.T @ half / half.shape[0]
    assert torch.allclose(cov, torch.eye(12), atol=0.05), cov.diagonal()  # whitened: identity covariance
    assert torch.equal(model[0].weight[12:], -model[0].weight[:12])  # and each filter's negative
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad


def test_batchnorm_scales_frozen_dirac_convs_and_the_logit_scale():
    model = create_model("fast-cifar", width=8)  # widths 8, 32, 32
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 6 and all(not bn.weight.requires_grad and bn.bias.requires_grad for bn in bns)
    assert all(bn.eps == 1e-12 for bn in bns)
    convs = [m for m in model.modules() if type(m).__name__ == "DiracConv"]
    first = convs[1].weight  # 8 -> 8: the identity for every filter
    ident = torch.zeros_like(first)
    torch.nn.init.dirac_(ident)
    assert torch.equal(first, ident)
    head, scale = model[-2], model[-1]
    assert head.weight.std().item() == torch.tensor(1.0).item() or abs(head.weight.std().item() - 1) < 1e-5
    assert scale.scale == 1 / 32


def test_format_2_checkpoints_keep_their_logit_scale():
    args = {"num_classes": 10, "in_channels": 3, "image_size": 32, "width": 8}
    old = create_model("fast-cifar-cpu", **args, logit_scale=1 / 9).eval()
    x = torch.randn(2, 3, 32, 32)
    for version, scale in ((2, 1 / 9), (3, 1 / 32)):
        ckpt = {"digitlab": version, "model_name": "fast-cifar-cpu", "model_args": args, "state_dict": old.state_dict()}
        model = model_from_checkpoint(ckpt)
        assert model[-1].scale == scale
    assert torch.allclose(model_from_checkpoint({**ckpt, "digitlab": 2})(x), old(x))


def test_grayscale_input_gets_a_whitening_stem_of_its_own_size():
    model = create_model("fast-cifar-cpu", in_channels=1, image_size=28, width=8)
    model.init_from_data(torch.randn(50, 1, 28, 28))
    assert model[0].weight.shape == (8, 1, 2, 2) and model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_training_whitens_the_stem_from_its_own_data_and_keeps_it(tmp_path):
    data = tiny_image_data(n_train=300, n_test=100)
    cfg = apply_preset(RunConfig(name="r", runs_dir=str(tmp_path)), "cifar-fast-cpu")
    cfg.data.dataset, cfg.model.width, cfg.train.epochs, cfg.train.batch_size = "tiny", 8, 3, 50
    res = train(cfg, data=data, quiet=True)
    stem = load_checkpoint(res.run_dir / "last.pt")["state_dict"]["0.weight"]
    fresh = create_model("fast-cifar-cpu", in_channels=1, image_size=28, width=8)
    fresh.init_from_data(normalize(data.train_x, data.mean, data.std))
    assert torch.allclose(stem, fresh[0].weight, atol=1e-5)  # computed once from the data, then frozen
    # The recipe learns the tiny task (chance: 0.1). Its classes are positions, and the recipe mirrors:
    # 0/4, 1/3, 5/9 and 6/8 swap under a mirror, so a mirror-trained model's ceiling is 0.2 + 0.8 / 2 = 0.6.
    assert res.final_acc > 0.3, res.history
