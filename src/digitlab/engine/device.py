"""Where and in what precision to run: device choice, autocast, thread count."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from digitlab.errors import DigitlabError, unknown_name

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise DigitlabError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DigitlabError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DigitlabError("device 'mps' requested but MPS is not available; use --device cpu or auto")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """Pick the compute precision. `auto`: bf16 on GPUs that have it (fp16 otherwise), fp32 on CPU.

    On CPU, the small digit nets are bound by memory traffic and im2col rather than matmul
    throughput, so bf16 autocast (AMX) does not pay for its casts; BENCHMARKS.md has the numbers.
    """
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, list(PRECISIONS))
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise DigitlabError("fp16 autocast is not supported on CPU; use bf16 or fp32")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Autocast context for the forward pass; BatchNorm and the loss stay fp32 under it."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
