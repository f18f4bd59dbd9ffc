"""Precision choice: `auto` takes bf16 on a CPU only where the hardware computes it."""

from __future__ import annotations

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
