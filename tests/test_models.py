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
    frozen = {pname for pname, p in model.named_parameters() if not p.requires_grad}
    # airbench's nets freeze their whitening stem's filters and their BatchNorm scales; nothing else is frozen
    bn_scales = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert frozen == ({"0.weight"} | bn_scales if name in ("fast-cifar", "fast-cifar-cpu") else set())
    for pname, p in model.named_parameters():
        if pname in frozen:
            assert p.grad is None, pname
        else:
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
