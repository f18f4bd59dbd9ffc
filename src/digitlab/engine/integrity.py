"""What a loaded checkpoint must be before anything uses it: a digest of its tensors, valid fields, sane numbers.

``torch.load(weights_only=True)`` keeps a checkpoint from running code; it does not keep a flipped
byte, an edited field or a diverged training from reaching an answer. ``save_checkpoint`` stores
``tensor_digest`` of what it writes and ``load_checkpoint`` recomputes it; ``check_fields`` turns each
malformed field into one ``DigitlabError`` naming it (instead of a traceback deep in the model or
the preprocessing); ``check_outputs`` runs the rebuilt model once and refuses outputs of the wrong
width or that are not finite. Checkpoints written before the digest existed load as before.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping
from typing import TypeGuard

import torch
from torch import nn

from digitlab.engine.limits import _is_number, check_temperature
from digitlab.errors import DigitlabError
from digitlab.models.registry import is_import_path, model_info

DIGEST_KEY = "digest"
# The fields that decide a prediction besides the weights: a change to any of them changes answers.
DIGESTED_FIELDS = (
    "digitlab",
    "model_name",
    "model_args",
    "classes",
    "channels",
    "image_size",
    "mean",
    "std",
    "task",
    "temperature",
)
CHANNELS = (1, 3)  # grey digits, colour images: what preprocessing produces
MAX_IMAGE_SIZE = 1024  # input side in pixels; the datasets here are 8-32, a photo model a few hundred
MAX_CLASSES = 100_000  # far above any dataset here; a bound so a corrupt list is not trusted blindly
# Trained weights here stay within a few hundred; one near float32's limit (1e38) overflows a logit
# to inf, so anything this large is corruption or a diverged run, not a model.
MAX_ABS_WEIGHT = 1e6
# Pixels are scaled to [0, 1] before normalising: a dataset's mean lies in it and its std is below 1.
# Far outside these bounds the inputs overflow or vanish, so they are not any dataset's statistics.
MEAN_LIMIT = 1e3
STD_RANGE = (1e-6, 1e3)


def tensor_digest(ckpt: Mapping) -> str:
    """SHA-256 over the weights (name, dtype, shape and bytes of each) and the fields in ``DIGESTED_FIELDS``."""
    h = hashlib.sha256()
    fields = {k: ckpt[k] for k in DIGESTED_FIELDS if k in ckpt}
    h.update(json.dumps(fields, sort_keys=True, default=repr).encode())
    for name in sorted(ckpt["state_dict"]):
        t = ckpt["state_dict"][name]
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return "sha256:" + h.hexdigest()


def with_digest(ckpt: dict) -> dict:
    """The checkpoint with its digest set (what ``save_checkpoint`` writes)."""
    return {**ckpt, DIGEST_KEY: tensor_digest(ckpt)}


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def check_fields(ckpt: dict, where: str) -> None:
    """Refuse a checkpoint whose fields cannot describe a model, with one line naming the field."""

    def bad(field: str, why: str) -> DigitlabError:
        return DigitlabError(
            f"{where}: field {field!r} {why}; the checkpoint is corrupt or was not written by digitlab"
        )

    if not _is_int(ckpt["digitlab"]) or ckpt["digitlab"] < 1:
        raise bad("digitlab", f"is {ckpt['digitlab']!r}, not a format number")
    if not isinstance(ckpt["model_name"], str) or not ckpt["model_name"]:
        raise bad("model_name", "is not a model name")
    args = ckpt["model_args"]
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise bad("model_args", "is not a dict of keyword arguments")
    state = ckpt["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise bad("state_dict", f"is a {type(state).__name__}, not a dict of weights")
    for name, t in state.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise bad("state_dict", f"holds {name!r}: {type(t).__name__}, not a tensor")
    channels, size, classes = ckpt["channels"], ckpt["image_size"], ckpt["classes"]
    if not _is_int(channels) or channels not in CHANNELS:
        raise bad("channels", f"is {channels!r}, not one of {CHANNELS}")
    if not _is_int(size) or not 1 <= size <= MAX_IMAGE_SIZE:
        raise bad("image_size", f"is {size!r}, not a side of 1-{MAX_IMAGE_SIZE} pixels")
    if not isinstance(classes, (list, tuple)) or not 1 <= len(classes) <= MAX_CLASSES:
        raise bad("classes", "is not a list of class names")
    if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise bad("classes", "must be distinct strings")
    for field in ("mean", "std"):
        v = ckpt[field]
        if not isinstance(v, (list, tuple)) or len(v) != channels or not all(_is_number(x) for x in v):
            raise bad(field, f"is {v!r}, not {channels} finite number(s) (one per channel)")
    if not all(abs(float(m)) <= MEAN_LIMIT for m in ckpt["mean"]):
        raise bad("mean", f"is {ckpt['mean']!r}, beyond +-{MEAN_LIMIT:g}")
    if not all(STD_RANGE[0] <= float(s) <= STD_RANGE[1] for s in ckpt["std"]):
        raise bad("std", f"must be in [{STD_RANGE[0]:g}, {STD_RANGE[1]:g}]")
    # The model is built from model_args: its data-shape arguments must agree with the fields.
    for arg, want in (("num_classes", len(classes)), ("in_channels", channels), ("image_size", size)):
        if arg in args and args[arg] != want:
            raise bad("model_args", f"gives {arg}={args[arg]!r} but the checkpoint's fields say {want}")
    if ckpt.get("task") not in (None, "digits", "images"):
        raise bad("task", f"is {ckpt['task']!r}, not 'digits' or 'images'")
    if "temperature" in ckpt:
        check_temperature(ckpt["temperature"], where)
    metrics = ckpt.get("metrics")
    if metrics is not None and not isinstance(metrics, dict):
        raise bad("metrics", "is not a dict of results")
    for key in ("test_acc", "accuracy"):
        if isinstance(metrics, dict) and metrics.get(key) is not None and not _is_number(metrics[key]):
            raise bad("metrics", f"gives {key}={metrics[key]!r}, not a number")


def check_model_class(name: str, where: str) -> None:
    """A model named by import path must be a ``torch.nn.Module`` class before the checkpoint calls it.

    A checkpoint's fields are data: without this, ``model_name="subprocess:run"`` and
    ``model_args={"args": "...", "shell": True}`` would run a command when the file is loaded,
    which ``torch.load(weights_only=True)`` exists to prevent.
    """
    if not is_import_path(name):
        return
    fn = model_info(name).fn
    if not (inspect.isclass(fn) and issubclass(fn, nn.Module)):
        raise DigitlabError(
            f"{where}: model {name!r} is not a torch.nn.Module class; a checkpoint may only name a model class"
        )


def check_weights(state_dict: Mapping, where: str) -> None:
    """Refuse weights that are NaN, infinite or beyond ``MAX_ABS_WEIGHT`` (a diverged run or corruption)."""
    for name, t in state_dict.items():
        if not t.is_floating_point() or t.numel() == 0:
            continue
        t = t.detach().float()
        if not bool(torch.isfinite(t).all()):
            raise DigitlabError(f"{where}: weight {name!r} holds NaN or infinite values; the model cannot answer")
        peak = float(t.abs().max())
        if peak > MAX_ABS_WEIGHT:
            raise DigitlabError(f"{where}: weight {name!r} reaches {peak:.3g}, beyond {MAX_ABS_WEIGHT:g}: not a model")


def check_digest(ckpt: dict, where: str) -> None:
    """Recompute the digest a checkpoint carries; a mismatch means a changed byte or an edited field."""
    stored = ckpt[DIGEST_KEY]
    if not isinstance(stored, str) or stored != tensor_digest(ckpt):
        raise DigitlabError(
            f"{where}: its weights or fields do not match the digest stored with them "
            "(the file is corrupt or was edited); use an intact copy"
        )


@torch.no_grad()
def check_outputs(model: nn.Module, ckpt: dict, where: str) -> None:
    """Run the rebuilt model once on a blank input: one finite logit per class, or a DigitlabError."""
    args = ckpt.get("model_args") or {}
    channels = ckpt.get("channels", args.get("in_channels"))
    size = ckpt.get("image_size", args.get("image_size"))
    classes = len(ckpt["classes"]) if "classes" in ckpt else args.get("num_classes")
    if not (_is_int(channels) and _is_int(size) and _is_int(classes)):
        return  # a partial checkpoint (tests build them): nothing to check against
    param = next(model.parameters(), None)
    x = torch.zeros(2, channels, size, size, device=param.device if param is not None else "cpu")
    try:
        out = model(x)
    except Exception as exc:  # noqa: BLE001 - a shape the model cannot take: the checkpoint's fields are wrong
        raise DigitlabError(
            f"{where}: model {ckpt.get('model_name')!r} cannot take a {channels}x{size}x{size} input "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        ) from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DigitlabError(f"{where}: the model gives outputs of shape {shape} for {classes} class names")
    if not bool(torch.isfinite(out).all()):
        raise DigitlabError(f"{where}: the model's outputs are NaN or infinite; the checkpoint is broken")
