"""Checkpoints: plain dicts that rebuild their model alone and load with weights_only=True."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

import torch
from torch import nn

from digitlab.engine.integrity import (
    DIGEST_KEY,
    check_digest,
    check_fields,
    check_model_class,
    check_outputs,
    check_weights,
    with_digest,
)
from digitlab.errors import DigitlabError
from digitlab.models import create_model
from digitlab.models.fast import POOL_LATE_BEFORE_FORMAT_2

# 2: `fast` and `fast-wide` pool before their second stage's BatchNorm (models/fast.py).
# 3: `fast-cifar` and `fast-cifar-cpu` divide their logits by the head's width, not by 9 (models/cifar_fast.py).
FORMAT_VERSION = 3
LOGIT_SCALE_BEFORE_FORMAT_3 = {"fast-cifar": 1 / 9, "fast-cifar-cpu": 1 / 9}
_UMASK = os.umask(0)
os.umask(_UMASK)
REQUIRED_KEYS = ("model_name", "model_args", "state_dict", "classes", "channels", "image_size", "mean", "std")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers (what gets saved)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = cast(nn.Module, model._orig_mod)  # torch types Module attributes as Tensor | Module
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


@contextlib.contextmanager
def _ctrl_c_held():
    """Hold a Ctrl-C (SIGINT) until the block is done, then raise it.

    A KeyboardInterrupt can land anywhere, even between creating the temporary file and the
    ``try`` that removes it; held, the save always finishes whole and the interrupt follows.
    Only Python's default handler is replaced, and only in the main thread (signals go there).
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or a full quota: the same remedy


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file whole or not at all: ``write`` fills a temporary file in the same folder, then a rename.

    A crash never leaves half a file or a temporary one, and a Ctrl-C during the write waits for it
    to finish (then interrupts as usual). The file gets the usual umask permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _ctrl_c_held():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; run files are shared like any saved file
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
                raise DigitlabError(f"no space left on the disk writing {path}: free some space and try again") from exc
            raise
    return path


def save_checkpoint(path: str | Path, ckpt: dict) -> Path:
    """Save a checkpoint with ``write_atomically``: a crash or Ctrl-C never leaves half a checkpoint.

    A checkpoint with weights also stores the digest of its weights and fields, which
    ``load_checkpoint`` verifies.
    """
    full = {"digitlab": FORMAT_VERSION, **ckpt}
    if isinstance(full.get("state_dict"), dict):
        full = with_digest(full)
    return write_atomically(path, lambda f: torch.save(full, f))


def _one_line(exc: BaseException, limit: int) -> str:
    """An exception's message on one line (torch's span several), cut to ``limit`` characters."""
    return " ".join(str(exc).split())[:limit]


def resolve_checkpoint_path(path: str | Path, default_name: str = "best.pt") -> Path:
    """A run directory stands for its best.pt (or last.pt when asked); a file stands for itself."""
    p = Path(path)
    if p.is_dir():
        p = p / default_name
    if not p.exists():
        raise DigitlabError(f"checkpoint not found: {p}")
    return p


def load_checkpoint(path: str | Path, default_name: str = "best.pt") -> dict:
    """Load and validate a digitlab checkpoint; anything else is a clear DigitlabError.

    Beyond the format marker and the required keys: each field's type and range, finite weights
    within ``MAX_ABS_WEIGHT``, and the stored digest when there is one (older checkpoints have none).
    """
    p = resolve_checkpoint_path(path, default_name)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, truncated files: all mean "not a checkpoint"
        raise DigitlabError(
            f"{p} is not a readable digitlab checkpoint ({type(exc).__name__}: {_one_line(exc, 200)})"
        ) from exc
    if not isinstance(ckpt, dict) or "digitlab" not in ckpt:
        raise DigitlabError(
            f"{p} is not a digitlab checkpoint (no 'digitlab' format marker); train one with `digitlab train`"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise DigitlabError(f"{p} is missing {', '.join(missing)}; it is not a complete digitlab checkpoint")
    check_fields(ckpt, str(p))
    if ckpt["digitlab"] > FORMAT_VERSION:
        raise DigitlabError(f"{p} was written by a newer digitlab (format {ckpt['digitlab']}); upgrade digitlab")
    if DIGEST_KEY in ckpt:
        check_digest(ckpt, str(p))
    check_weights(ckpt["state_dict"], str(p))
    return ckpt


def model_from_checkpoint(ckpt: dict, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the model (registered, or the import path it was trained from) with its saved arguments and
    weights, in eval mode."""
    args = dict(ckpt["model_args"])
    if ckpt["digitlab"] < 2 and ckpt["model_name"] in POOL_LATE_BEFORE_FORMAT_2:
        args.setdefault("pool_early", False)  # the layer order these weights were trained in
    if ckpt["digitlab"] < 3 and ckpt["model_name"] in LOGIT_SCALE_BEFORE_FORMAT_3:
        args.setdefault("logit_scale", LOGIT_SCALE_BEFORE_FORMAT_3[ckpt["model_name"]])
    check_model_class(ckpt["model_name"], "checkpoint")  # never call a function a checkpoint names
    try:
        model = create_model(ckpt["model_name"], **args)
    except (TypeError, ValueError, RuntimeError) as exc:  # an unknown or out-of-range argument in model_args
        raise DigitlabError(
            f"checkpoint's model {ckpt['model_name']!r} cannot be built from its arguments {args}: {_one_line(exc, 200)}"
        ) from exc
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise DigitlabError(
            f"checkpoint weights do not fit model {ckpt['model_name']!r}: {_one_line(exc, 300)}"
        ) from exc
    model = model.to(device).eval()
    check_outputs(model, ckpt, f"checkpoint of model {ckpt['model_name']!r}")
    return model


def check_compatible(ckpt: dict, channels: int, image_size: int, num_classes: int, dataset: str) -> None:
    """Refuse to evaluate or resume a checkpoint on data of another shape."""
    want = (ckpt["channels"], ckpt["image_size"], len(ckpt["classes"]))
    have = (channels, image_size, num_classes)
    if want != have:
        raise DigitlabError(
            f"checkpoint was trained on {ckpt.get('dataset', '?')} ({want[0]}x{want[1]}x{want[1]}, {want[2]} classes) "
            f"but {dataset} is {have[0]}x{have[1]}x{have[1]} with {have[2]} classes"
        )
