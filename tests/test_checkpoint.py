"""Checkpoints: atomic writes, validation, rebuilding, shape compatibility."""

from __future__ import annotations

import pytest
import torch

from digitlab.engine.checkpoint import (
    FORMAT_VERSION,
    check_compatible,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
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
    assert loaded["digitlab"] == FORMAT_VERSION == 2
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


def test_ctrl_c_during_a_save_waits_for_the_whole_file(tmp_path):
    path = tmp_path / "last.pt"
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 3, "marker": _CtrlC(), "weights": torch.ones(1000)})
    saved = torch.load(path, weights_only=False)  # whole: the interrupt came after the rename (our own file)
    assert saved["epoch"] == 3 and saved["marker"] == 7 and saved["weights"].sum() == 1000
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left
    import signal

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
