"""Shared layers (models/layers.py): ByteDropout's distribution, the byte generator, and the seeds' layer order."""

from __future__ import annotations

import pytest
import torch

from digitlab.models import create_model
from digitlab.models.layers import ByteDropout, as_the_seed_wrote_it, random_bytes_like


def test_byte_dropout_draws_nn_dropouts_distribution():
    torch.manual_seed(0)
    x = torch.ones(64, 64, 12, 12).contiguous(memory_format=torch.channels_last)
    for p in (0.25, 0.5):
        y = ByteDropout(p)(x)
        kept = (y != 0).float().mean().item()
        assert abs(kept - (1 - p)) < 0.005  # 590k elements: the standard error is ~0.0006
        assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - p)))
        assert y.is_contiguous(memory_format=torch.channels_last)
    d = ByteDropout(0.25)
    x = torch.randn(8, 100, requires_grad=True)
    y = d(x)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() / 0.75)  # the gradient goes through the same mask, scaled
    assert torch.equal(d.eval()(x), x)
    other = ByteDropout(0.3)  # not a multiple of 1/256: nn.Dropout's own draw
    assert abs((other(torch.ones(100_000)) != 0).float().mean().item() - 0.7) < 0.01


def test_random_bytes_are_uniform_in_the_tensors_layout():
    torch.manual_seed(0)
    x = torch.empty(64, 64, 12, 12).contiguous(memory_format=torch.channels_last)
    r = random_bytes_like(x)
    assert r.dtype == torch.uint8 and r.shape == x.shape and r.stride() == x.stride()
    counts = torch.bincount(r.flatten().long(), minlength=256).double()
    expected = x.numel() / 256  # 2304 per value
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 330  # 255 degrees of freedom: P(chi2 > 330) < 0.1%
    for shape in [(7,), (3, 5), (2, 3, 5, 7)]:  # sizes that are not multiples of 8
        y = random_bytes_like(torch.empty(shape))
        assert y.shape == shape and y.is_contiguous()
    z = random_bytes_like(torch.empty(4, 6).t())  # not dense in a known layout: contiguous bytes
    assert z.shape == (6, 4)


def test_the_reference_gets_the_seeds_own_layers():
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=10, in_channels=1, image_size=28)
    seed = create_model("cnn", num_classes=10, in_channels=1, image_size=28)
    seed.load_state_dict(model.state_dict())  # the same keys: only parameter-free layers moved
    assert sum(isinstance(m, ByteDropout) for m in model.modules()) == 2
    as_the_seed_wrote_it(seed)
    drops = [m for m in seed.modules() if isinstance(m, torch.nn.Dropout)]
    assert [type(m) for m in drops] == [torch.nn.Dropout] * 2 and [m.p for m in drops] == [0.25, 0.5]
    assert [type(m).__name__ for m in seed.features] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Dropout"]
    # the same outputs and gradients as digitlab's order: the parametrised test below


@pytest.mark.parametrize("name", ["cnn", "cnn-k", "cnn-004", "cnn-small", "vgg"])
def test_seed_cnns_pool_before_relu_with_the_seeds_outputs_and_gradients(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1, image_size=28)
    seed = create_model(name, num_classes=10, in_channels=1, image_size=28)
    seed.load_state_dict(model.state_dict())
    as_the_seed_wrote_it(seed)

    def pooled_first(m) -> bool:
        orders = [[type(c).__name__ for c in s] for s in m.modules() if isinstance(s, torch.nn.Sequential)]
        return getattr(m, "pool_first", False) or any(
            a == "MaxPool2d" and b == "ReLU" for o in orders for a, b in zip(o, o[1:], strict=False)
        )

    assert pooled_first(model) and not pooled_first(seed)  # digitlab's order, and the seed's put back
    x = torch.randn(8, 1, 28, 28)
    model.eval(), seed.eval()
    out, ref = model(x), seed(x)
    assert torch.equal(out, ref)
    out.square().sum().backward(), ref.square().sum().backward()
    for p, q in zip(model.parameters(), seed.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
