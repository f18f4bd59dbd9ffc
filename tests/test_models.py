"""Every registered model: shapes, gradients, parameter counts, size limits; `digitlab models` / `summary`."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from digitlab.cli import main
from digitlab.errors import DigitlabError
from digitlab.models import create_model, list_models

# The seed models' sizes at their natural input (MNIST 1x28x28, CIFAR 3x32x32), 10 classes.
EXPECTED_PARAMS = {
    "mlp": 6_442,
    "cnn-small": 6_422,
    "cnn": 1_199_882,
    "cnn-k": 121_930,
    "lenet5": 44_426,
    "cnn-004": 25_706,
    "cifar-net": 62_006,
    "vgg": 9_231_114,
}
NAMES = [m.name for m in list_models()]


def natural(name: str) -> tuple[int, int]:
    info = next(m for m in list_models() if m.name == name)
    p = inspect.signature(info.fn).parameters
    return p["in_channels"].default, p["image_size"].default


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_seed_models_registered():
    assert set(EXPECTED_PARAMS) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_explicit(name):
    info = next(m for m in list_models() if m.name == name)
    params = inspect.signature(info.fn).parameters
    for arg in ("num_classes", "in_channels", "image_size"):
        assert params[arg].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["num_classes"].default == 10
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), "no **kwargs"
    assert info.description and "\n" not in info.description


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_natural_input(name):
    torch.manual_seed(0)
    c, s = natural(name)
    model = create_model(name)
    x = torch.randn(3, c, s, s)
    y = torch.tensor([0, 1, 2])
    out = model(x)
    assert out.shape == (3, 10)
    # Logits, not log-probabilities: training applies cross_entropy itself.
    assert not torch.allclose(out.logsumexp(1), torch.zeros(3), atol=1e-3)
    F.cross_entropy(out, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name):
    assert n_params(create_model(name)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (3, 28), (1, 32)])
def test_any_channels_and_size(name, channels, size):
    model = create_model(name, num_classes=7, in_channels=channels, image_size=size).eval()
    with torch.no_grad():
        assert model(torch.randn(2, channels, size, size)).shape == (2, 7)


@pytest.mark.parametrize("name", NAMES)
def test_small_images_work_or_say_the_minimum(name):
    try:
        model = create_model(name, in_channels=1, image_size=8)
    except DigitlabError as exc:
        assert "at least" in str(exc) and name in str(exc)
        return
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_minimum_sizes_are_exact():
    minimums = {"cnn-small": 16, "cnn": 6, "cnn-k": 10, "cnn-004": 12, "lenet5": 16, "cifar-net": 16}
    for name, minimum in minimums.items():
        with pytest.raises(DigitlabError, match=f"at least {minimum}x{minimum}"):
            create_model(name, in_channels=1, image_size=minimum - 1)
        model = create_model(name, in_channels=1, image_size=minimum).eval()
        with torch.no_grad():
            assert model(torch.zeros(1, 1, minimum, minimum)).shape == (1, 10)


def test_width_knobs():
    assert n_params(create_model("mlp", hidden=16)) == 785 * 16 + 17 * 16 + 17 * 10
    assert n_params(create_model("cnn-small", n_feature=8)) > EXPECTED_PARAMS["cnn-small"]


def test_dummy_forward_leaves_batchnorm_untouched():
    model = create_model("vgg")
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 0 and torch.all(bn.running_mean == 0)
    assert model.training


def test_unknown_model_lists_names():
    with pytest.raises(DigitlabError) as exc:
        create_model("nope")
    for name in ("mlp", "cnn", "lenet5", "vgg"):
        assert name in str(exc.value)


@pytest.mark.parametrize("name", NAMES)
def test_typo_kwarg_raises(name):
    with pytest.raises(TypeError):
        create_model(name, num_clases=10)


# ---- the CLI: `digitlab models` and `digitlab summary`


def test_cli_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    for count in ("6,442", "1,199,882", "44,426", "62,006", "9,231,114"):
        assert count in out
    assert "3x32x32" in out and "1x28x28" in out


def test_cli_summary(capsys):
    assert main(["summary", "cnn"]) == 0
    out = capsys.readouterr().out
    assert "Conv2d" in out and "[1, 64, 12, 12]" in out
    assert "Total params: 1,199,882" in out
    assert "Mult-Adds" in out


def test_cli_summary_shapes(capsys):
    assert main(["summary", "cifar-net", "--dataset", "cifar10"]) == 0
    assert "Total params: 62,006" in capsys.readouterr().out
    assert main(["summary", "mlp", "--channels", "3", "--image-size", "32", "--num-classes", "5"]) == 0
    assert f"Total params: {3 * 32 * 32 * 8 + 8 + 72 + 45:,}" in capsys.readouterr().out
    assert main(["summary", "mlp", "--dataset", "digits"]) == 0
    assert "Total params: 682" in capsys.readouterr().out


def test_cli_summary_errors(capsys):
    assert main(["summary", "cnn-k", "--dataset", "digits"]) == 2
    assert "at least 10x10" in capsys.readouterr().err
    assert main(["summary", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["summary", "mlp", "--dataset", "imagenet"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_byte_dropout_draws_nn_dropouts_distribution():
    from digitlab.models.cnn import ByteDropout

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
    from digitlab.models.cnn import random_bytes_like

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
    from digitlab.models.cnn import ByteDropout, as_the_seed_wrote_it

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
    from digitlab.models.cnn import as_the_seed_wrote_it

    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1, image_size=28)
    seed = create_model(name, num_classes=10, in_channels=1, image_size=28)
    seed.load_state_dict(model.state_dict())
    as_the_seed_wrote_it(seed)

    def pooled_first(m) -> bool:
        orders = [[type(c).__name__ for c in s] for s in m.modules() if isinstance(s, torch.nn.Sequential)]
        return getattr(m, "pool_first", False) or any(
            a == "MaxPool2d" and b == "ReLU" for o in orders for a, b in zip(o, o[1:])
        )

    assert pooled_first(model) and not pooled_first(seed)  # digitlab's order, and the seed's put back
    x = torch.randn(8, 1, 28, 28)
    model.eval(), seed.eval()
    out, ref = model(x), seed(x)
    assert torch.equal(out, ref)
    out.square().sum().backward(), ref.square().sum().backward()
    for p, q in zip(model.parameters(), seed.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
