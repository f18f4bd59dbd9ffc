"""Checks on plain numbers from a checkpoint or a model file, without torch (an ONNX deployment has none)."""

from __future__ import annotations

import math
from numbers import Real

from digitlab.errors import DigitlabError

# Fitted temperatures are 0.3-3; far outside this range the probabilities are one-hot or uniform
# whatever the image, which no calibration produces. 0 or below gives NaN or inverted probabilities.
TEMPERATURE_RANGE = (0.01, 100.0)


def _is_number(v: object) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))


def check_temperature(temperature: object, where: str = "checkpoint") -> float:
    """A calibration temperature as a float, or a DigitlabError when it is not finite and in range."""
    low, high = TEMPERATURE_RANGE
    if not _is_number(temperature) or not low <= float(temperature) <= high:  # type: ignore[arg-type]
        raise DigitlabError(f"{where}: temperature {temperature!r} is not a number in [{low}, {high}]")
    return float(temperature)  # type: ignore[arg-type]


__all__ = ["TEMPERATURE_RANGE", "check_temperature"]
