"""Checkpoints: atomic writes, validation, rebuilding, shape compatibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from digitlab.engine.checkpoint import (
    FORMAT_VERSION,
    check_compatible,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from digitlab.engine.integrity import DIGEST_KEY, check_outputs, tensor_digest
from digitlab.errors import DigitlabError
from digitlab.models import create_model


def make_ckpt(model_name: str = "mlp") -> dict:
    args = {"num_classes": 10, "in_channels": 1, "image_size": 28}
    m = create_model(model_name, **args)
    return {
        "model_name": model_name,
        "model_args": args,
        "state_dict": m.state_dict(),
        "classes": list("0123456789"),
        "channels": 1,
        "image_size": 28,
        "mean": [0.1307],
        "std": [0.3081],
        "dataset": "mnist",
        "task": "digits",
    }


def test_roundtrip_rebuilds_identical_model(tmp_path):
    ck = make_ckpt()
    p = save_checkpoint(tmp_path / "m.pt", ck)
    loaded = load_checkpoint(p)
    assert loaded["digitlab"] == FORMAT_VERSION == 3
    m = model_from_checkpoint(loaded)
    assert not m.training
    x = torch.randn(3, 1, 28, 28)
    ref = create_model("mlp", **ck["model_args"])
    ref.load_state_dict(ck["state_dict"])
    torch.testing.assert_close(m(x), ref.eval()(x))
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind


def test_loads_with_weights_only(tmp_path):
    p = save_checkpoint(tmp_path / "m.pt", make_ckpt())
    assert torch.load(p, weights_only=True)["model_name"] == "mlp"


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(DigitlabError, match="not a readable digitlab checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(DigitlabError, match="not a digitlab checkpoint"):
        load_checkpoint(other)
    with pytest.raises(DigitlabError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_truncated_checkpoint(tmp_path):
    p = save_checkpoint(tmp_path / "m.pt", make_ckpt())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DigitlabError, match="not a readable"):
        load_checkpoint(p)


def test_weights_of_another_model(tmp_path):
    ck = make_ckpt()
    ck["model_name"] = "lenet5"
    p = save_checkpoint(tmp_path / "m.pt", ck)
    with pytest.raises(DigitlabError, match="do not fit model 'lenet5'"):
        model_from_checkpoint(load_checkpoint(p))


def test_incompatible_dataset():
    with pytest.raises(DigitlabError, match="3x32x32"):
        check_compatible(make_ckpt(), 3, 32, 10, "cifar10")
    check_compatible(make_ckpt(), 1, 28, 10, "fashion-mnist")  # same shape: allowed


class _CtrlC:
    """Pickled inside the checkpoint: presses Ctrl-C (SIGINT to this process) in the middle of the save."""

    def __reduce__(self):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGINT)
        return (int, (7,))


@pytest.fixture
def usual_ctrl_c():
    """Python's usual Ctrl-C for the test, as a terminal gives it: a process started in the background of
    a non-interactive shell (as some CI runners start the tests) ignores SIGINT."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_during_a_save_waits_for_the_whole_file(tmp_path, usual_ctrl_c):
    import signal

    path = tmp_path / "last.pt"
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 3, "marker": _CtrlC(), "weights": torch.ones(1000)})
    saved = torch.load(path, weights_only=False)  # whole: the interrupt came after the rename (our own file)
    assert saved["epoch"] == 3 and saved["marker"] == 7 and saved["weights"].sum() == 1000
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the usual Ctrl-C is back


def test_write_atomically_keeps_the_old_file_when_the_writer_fails(tmp_path):
    from digitlab.engine.checkpoint import write_atomically

    path = tmp_path / "metrics.csv"
    write_atomically(path, lambda f: f.write(b"epoch\n1\n"))

    def broken(f):
        f.write(b"epoch\n1\n2")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(path, broken)
    assert path.read_bytes() == b"epoch\n1\n"  # the previous file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


# ---- integrity: digest, fields, weights, outputs ----------------------------------------------


def test_a_saved_checkpoint_carries_a_digest_that_loading_verifies(tmp_path):
    p = save_checkpoint(tmp_path / "m.pt", make_ckpt())
    ck = torch.load(p, weights_only=True)
    assert ck[DIGEST_KEY] == tensor_digest(ck) and ck[DIGEST_KEY].startswith("sha256:")
    for change in (
        lambda c: c["state_dict"]["network.1.weight"].view(-1)[0].add_(1e-3),  # one weight, slightly
        lambda c: c.__setitem__("classes", list("0123456798")),  # two class names swapped
        lambda c: c.__setitem__("temperature", 2.0),
    ):
        edited = torch.load(p, weights_only=True)
        change(edited)
        torch.save(edited, p.with_name("edited.pt"))  # keeps the old digest
        with pytest.raises(DigitlabError, match="do not match the digest"):
            load_checkpoint(p.with_name("edited.pt"))
    assert load_checkpoint(p)["model_name"] == "mlp"


def test_a_checkpoint_without_digest_still_loads(tmp_path):
    old = {"digitlab": FORMAT_VERSION, **make_ckpt()}
    torch.save(old, tmp_path / "old.pt")
    assert DIGEST_KEY not in load_checkpoint(tmp_path / "old.pt")


def test_the_shipped_model_loads():
    from digitlab.inference.predictor import Predictor

    p = Predictor.load()
    assert p.predict(Image.new("L", (28, 28))).status == "empty"


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("image_size", 0, "'image_size'"),
        ("image_size", 28.0, "'image_size'"),
        ("channels", "x", "'channels'"),
        ("channels", 2, "'channels'"),
        ("state_dict", "weights", "'state_dict'"),
        ("state_dict", {"w": [1.0, 2.0]}, "'state_dict'"),
        ("classes", list("012"), "num_classes=10"),  # 3 class names for 10 outputs
        ("classes", "0123456789", "'classes'"),
        ("classes", list("0123456788"), "distinct"),
        ("mean", [0.1, 0.2], "'mean'"),
        ("std", [0.0], "'std'"),
        ("std", [1e300], "'std'"),
        ("mean", [-1e30], "'mean'"),
        ("std", [float("nan")], "'std'"),
        ("model_name", 7, "'model_name'"),
        ("model_args", "mlp", "'model_args'"),
        ("task", "audio", "'task'"),
        ("metrics", "great", "'metrics'"),
        ("metrics", {"test_acc": "99%"}, "test_acc"),
        ("digitlab", "2", "'digitlab'"),
        ("temperature", 0.0, "temperature"),
        ("temperature", -0.5, "temperature"),
        ("temperature", float("nan"), "temperature"),
        ("temperature", float("inf"), "temperature"),
        ("temperature", "1", "temperature"),
    ],
)
def test_each_malformed_field_is_one_clear_error(tmp_path, field, value, words):
    ck = make_ckpt()
    ck[field] = value
    path = tmp_path / "bad.pt"
    torch.save({"digitlab": FORMAT_VERSION, **ck}, path)  # no digest: the fields alone must be checked
    with pytest.raises(DigitlabError, match=words) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_an_unknown_model_argument_is_a_clear_error(tmp_path):
    ck = make_ckpt()
    ck["model_args"] = {**ck["model_args"], "wdith": 8}
    with pytest.raises(DigitlabError, match="cannot be built from its arguments"):
        model_from_checkpoint(load_checkpoint(save_checkpoint(tmp_path / "m.pt", ck)))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30])
def test_nan_infinite_or_huge_weights_are_refused(tmp_path, value):
    ck = make_ckpt()
    ck["state_dict"]["network.1.weight"][0, 0] = value
    with pytest.raises(DigitlabError, match="NaN or infinite|beyond"):
        load_checkpoint(save_checkpoint(tmp_path / "m.pt", ck))


def test_outputs_of_the_wrong_width_or_not_finite_are_refused():
    ck = {"digitlab": FORMAT_VERSION, **make_ckpt()}
    model = model_from_checkpoint(ck)
    with pytest.raises(DigitlabError, match=r"shape \(2, 10\) for 3 class names"):
        check_outputs(model, {**ck, "classes": list("abc")}, "m.pt")
    with pytest.raises(DigitlabError, match="cannot take a 3x28x28 input"):
        check_outputs(model, {**ck, "channels": 3}, "m.pt")
    with torch.no_grad():
        model.network[-1].bias.fill_(float("nan"))
    with pytest.raises(DigitlabError, match="NaN or infinite"):
        check_outputs(model, ck, "m.pt")


def test_the_predictor_never_answers_nan():
    from digitlab.inference.predictor import Predictor

    ck = {"digitlab": FORMAT_VERSION, **make_ckpt()}
    model = model_from_checkpoint(ck)
    predictor = Predictor(model, ck)
    with torch.no_grad():
        predictor.model.network[-1].bias.fill_(float("nan"))  # weights broken after loading
    img = Image.fromarray(np.pad(np.full((12, 4), 255, np.uint8), 8))
    with pytest.raises(DigitlabError, match="NaN or infinite"):
        predictor.predict(img)
    with pytest.raises(DigitlabError, match="temperature"):
        Predictor(model, {**ck, "temperature": 0.0})


def test_a_checkpoint_cannot_make_loading_call_a_function(tmp_path):
    # model_name as an import path is for model classes of your own; a function it names is never called.
    marker = tmp_path / "ran"
    ck = make_ckpt()
    ck["model_name"] = "subprocess:run"
    ck["model_args"] = {"args": f"touch {marker}", "shell": True}
    path = save_checkpoint(tmp_path / "evil.pt", ck)
    with pytest.raises(DigitlabError, match="not a torch.nn.Module class"):
        model_from_checkpoint(load_checkpoint(path))
    assert not marker.exists()


class OwnNet(torch.nn.Module):
    """A model of one's own, named by import path (this test module is importable as ``test_checkpoint``)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_a_model_class_of_ones_own_still_loads_by_import_path(tmp_path):
    ck = make_ckpt()
    ck["model_name"] = "test_checkpoint:OwnNet"
    ck["state_dict"] = OwnNet(**ck["model_args"]).state_dict()
    model = model_from_checkpoint(load_checkpoint(save_checkpoint(tmp_path / "own.pt", ck)))
    assert type(model).__name__ == "OwnNet" and model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
