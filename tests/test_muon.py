"""Muon (engine/muon.py) and the ``muon`` optimizer's parameter groups (engine/optim.py)."""

from __future__ import annotations

import pytest
import torch

from digitlab.config import TrainConfig
from digitlab.engine.muon import Muon, orthogonalise
from digitlab.engine.optim import MUON_BIAS_LR, MUON_HEAD_LR, build_optimizer, set_lr
from digitlab.errors import DigitlabError
from digitlab.models import create_model


def test_orthogonalise_gives_singular_values_near_one_with_the_same_directions():
    torch.manual_seed(0)
    g = torch.randn(64, 200) * torch.logspace(-2, 1, 200)  # badly conditioned, wide
    for m in (g, g.T):  # and tall
        o = orthogonalise(m).float()
        s = torch.linalg.svdvals(o)
        assert o.shape == m.shape and s.min() > 0.3 and s.max() < 1.3, s  # the quintic's S' ~ U(0.5, 1.5)
        assert torch.linalg.svdvals(m).max() > 5  # the input's were far from one
        u, _, vh = torch.linalg.svd(m, full_matrices=False)
        # the same singular vectors: o is about U @ Vh, so its projection on them is nearly diagonal
        core = u.T @ o @ vh.T
        assert core.diagonal().abs().min() > 0.3 and (core - core.diag().diag()).abs().max() < 0.35


def test_muon_step_renormalises_the_filters_and_learns_their_direction():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(16, 8, 3, 3) * 3)
    opt = Muon([{"params": [w], "muon": True}], lr=1e-9, momentum=0.6)
    w.grad = torch.randn_like(w)
    opt.step()
    assert w.norm().item() == pytest.approx(16**0.5, rel=1e-5)  # rescaled to sqrt(out) before the (tiny) step
    target = torch.randn(16, 8, 3, 3)
    opt.param_groups[0]["lr"] = 0.1
    cos = torch.nn.functional.cosine_similarity
    start = cos(w.detach().flatten(), target.flatten(), dim=0)
    for _ in range(30):
        opt.zero_grad()
        (w - target).square().sum().backward()
        opt.step()
        assert 3.5 < w.norm().item() < 4.5  # the scale stays fixed: the lr alone sets the angular step
    assert start < 0.2 and cos(w.detach().flatten(), target.flatten(), dim=0) > 0.9


def test_muon_sgd_groups_are_torch_nesterov_sgd_with_weight_decay():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(10))
    b = torch.nn.Parameter(a.detach().clone())
    ours = Muon([{"params": [a], "muon": False, "momentum": 0.85, "weight_decay": 0.01}], lr=0.05, momentum=0.6)
    ref = torch.optim.SGD([b], lr=0.05, momentum=0.85, nesterov=True, weight_decay=0.01)
    for step in range(5):
        for p, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            (p.sin().sum() * (step + 1)).backward()
            opt.step()
    assert torch.allclose(a, b, atol=1e-6)


def test_muon_groups_scale_with_the_global_batch_and_decay_alike():
    model = create_model("fast-cifar-cpu", width=8)
    t = TrainConfig(optimizer="muon", lr=0.24, momentum=0.6, weight_decay=2e-6 / 0.24, batch_size=500)
    opt = build_optimizer(model, t, world_size=2)
    filters, biases, head, stem_bias = opt.param_groups
    assert filters["muon"] and all(p.ndim == 4 for p in filters["params"])
    assert not any(p is model[0].weight for p in filters["params"])  # the whitening stem is frozen
    assert biases["lr_scale"] == pytest.approx(MUON_BIAS_LR * 1000) and head["lr_scale"] == pytest.approx(
        MUON_HEAD_LR * 1000
    )
    assert stem_bias["params"] == [model[0].bias] and not any(p is model[0].bias for p in biases["params"])
    t.schedule, t.warmup = "onecycle", 0.0  # airbench's linear decay
    assert set_lr(opt, 0, 800, t) == pytest.approx(0.24)
    assert biases["lr"] == pytest.approx(0.053 * 1000) and head["lr"] == pytest.approx(0.67 * 1000)
    for g in (biases, head, stem_bias):  # airbench: 2e-6 per example of the batch, the same shrink in every group
        assert g["lr"] * g["weight_decay"] == pytest.approx(2e-6 * 1000)
    # the stem's bias: its rate falls to 0 over the first 3/8 of the steps (airbench's 3 of 8 epochs), then stays 0
    for step, main, stem in ((150, 1 - 150 / 800, 1 - 150 / 300), (299, 1 - 299 / 800, 1 / 300), (300, 0.625, 0)):
        set_lr(opt, step, 800, t)
        assert biases["lr"] == pytest.approx(0.053 * 1000 * main) and stem_bias["lr"] == pytest.approx(
            0.053 * 1000 * stem, abs=1e-9
        )
    set_lr(opt, 799, 800, t)
    assert stem_bias["lr"] == 0.0 and biases["lr"] > 0
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in model.parameters())


def test_muon_refuses_a_model_without_conv_filters():
    with pytest.raises(DigitlabError, match="no"):
        build_optimizer(create_model("mlp"), TrainConfig(optimizer="muon"))
