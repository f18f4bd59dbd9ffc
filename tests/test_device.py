"""Precision choice: `auto` takes bf16 on a CPU only where the hardware computes it; malloc's reuse."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from digitlab.config import RunConfig
from digitlab.engine import device as device_mod
from digitlab.engine.device import resolve_precision
from digitlab.engine.presets import PRESETS
from digitlab.errors import DigitlabError

CPU = torch.device("cpu")


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", CPU) == expected


def test_explicit_bf16_is_obeyed_with_a_warning_where_emulated(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated"):
        assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(DigitlabError, match="fp16"):
        resolve_precision("fp16", CPU)


def test_default_and_fast_presets_choose_precision_by_hardware():
    # A hard-coded bf16 would make training many times slower on CPUs that emulate it (AMD EPYC, AVX2).
    assert RunConfig().train.precision == "auto"
    for name in ("fast", "fast-99.5", "best"):
        assert PRESETS[name].train["precision"] == "auto", name


def test_native_bf16_check_answers_a_bool():
    assert isinstance(device_mod.cpu_has_native_bf16(), bool)


REUSE = """
import resource, sys, torch
from digitlab.engine.device import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "1" else False
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1))
x = torch.randn(256, 3, 32, 32)  # activations of 256 x 32 x 32 x 32 floats: 32 MB each, a training step's size
def step():
    net.zero_grad(set_to_none=True)
    net(x).square().mean().backward()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
before = faults()
for _ in range(5):
    step()
print(applied, (faults() - before) // 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not platform.libc_ver()[0] == "glibc", reason="glibc")
def test_keep_freed_memory_reuses_big_buffers_instead_of_faulting_them_in_again():
    def run(keep: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", REUSE, keep], capture_output=True, text=True, check=True)
        applied, faults = out.stdout.split()
        return applied, int(faults)

    (applied_default, default), (applied, kept) = run("0"), run("1")
    assert applied_default == "False" and applied == "True"
    assert default >= 100  # glibc maps every big buffer afresh each step (~150,000 faults a step with 4 KB pages)
    assert kept <= default / 10  # kept: the freed buffers are reused, already faulted in (~2,000-5,000 seen)
