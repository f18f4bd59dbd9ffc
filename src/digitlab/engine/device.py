"""Where and in what precision to run: device choice, autocast, thread count."""

from __future__ import annotations

import contextlib
import ctypes
import sys
import warnings
from contextlib import AbstractContextManager

import torch

from digitlab.errors import DigitlabError, unknown_name

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


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


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles); elsewhere bf16 is emulated."""
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Pick the compute precision. `auto`: bf16 on GPUs that have it (fp16 otherwise); on CPU,
    bf16 where the CPU computes it natively, fp32 elsewhere.

    With bf16 in hardware (Xeon with AMX) bf16 autocast + channels_last trains the small digit nets
    faster than fp32; on an AVX2-only CPU (AMD EPYC) bf16 is emulated and trains many times slower
    than fp32 (BENCHMARKS.md has both). An explicit `bf16` is obeyed, with a warning.
    """
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, list(PRECISIONS))
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise DigitlabError("fp16 autocast is not supported on CPU; use bf16 or fp32")
        if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn(
                "this CPU has no native bf16 (no AVX512-BF16/AMX): bf16 is emulated and much slower "
                "than fp32; use --precision auto or fp32",
                stacklevel=2,
            )
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Autocast context for the forward pass; BatchNorm and the loss stay fp32 under it."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next allocation instead of returning it to the kernel.

    A CPU training step allocates and frees the same activation buffers every step, and most are larger
    than glibc's largest mmap threshold (32 MB), so by default each step maps fresh pages that the kernel
    faults in and zeroes one 4 KB page at a time: about 150,000 page faults a step for ``fast-cifar-cpu``
    at batch 1000, a tenth of the step (BENCHMARKS.md, ``benchmarks/malloc_step.py``). With mmap off and trimming
    off, the heap keeps the buffers and the next step reuses them; the cost is that the process keeps its
    peak memory until it exits, which a training process holds anyway. Linux with glibc only (elsewhere
    nothing changes); returns whether it applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
