"""Confidence calibration: one temperature that makes a model's probabilities mean what they say.

Label smoothing (digitlab's recipes use 0.1) trains a model to put about 90% on the class it is
sure of, so a perfectly clear digit reads "91% sure" while the model is right 99.7% of the time.
Dividing the logits by a temperature fitted on held-out data (Guo et al., 2017, "On Calibration of
Modern Neural Networks") fixes the scale without changing any prediction: argmax is unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

T_RANGE = (0.05, 20.0)  # temperatures searched (log scale)


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    return F.cross_entropy(logits.float() / temperature, labels).item()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that minimises the NLL of ``labels`` (a 1-D bounded search over log T).

    Args:
        logits: (N, classes) raw model outputs on held-out data (one view per image).
        labels: (N,) true class indices.
    """
    from scipy.optimize import minimize_scalar

    if logits.shape[0] == 0:
        raise ValueError("cannot fit a temperature on no examples")
    logits = logits.float()
    res = minimize_scalar(
        lambda log_t: nll(logits, labels, math.exp(log_t)),
        bounds=tuple(math.log(t) for t in T_RANGE),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(math.exp(res.x))


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """|confidence - accuracy| averaged over equal-width confidence bins, weighted by their sizes."""
    conf, pred = probs.max(1)
    right = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.float().mean().item() * abs(conf[m].mean().item() - right[m].mean().item())
    return ece


def calibration_summary(logits: torch.Tensor, labels: torch.Tensor, temperature: float | None) -> dict:
    """NLL and expected calibration error of the raw probabilities and, given a temperature, of the
    calibrated ones (what `digitlab eval` reports)."""
    labels = labels.cpu()
    logits = logits.float().cpu()
    out = {
        "temperature": temperature,
        "nll": round(nll(logits, labels), 5),
        "ece": round(expected_calibration_error(logits.softmax(1), labels), 5),
    }
    if temperature:
        out["nll_calibrated"] = round(nll(logits, labels, temperature), 5)
        out["ece_calibrated"] = round(expected_calibration_error((logits / temperature).softmax(1), labels), 5)
    return out
