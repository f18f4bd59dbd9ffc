"""Fitting a model's temperature: the orchestration around ``evaluate.calibration``'s math.

One function fits a temperature to a model (always in fp32, one view per image as `digitlab
predict` reads them); training's last step and `digitlab export` both use it.
"""

from __future__ import annotations

from torch import nn

from digitlab.data.base import ImageData
from digitlab.engine.checkpoint import model_from_checkpoint
from digitlab.engine.evaluation import evaluate
from digitlab.evaluate.calibration import fit_temperature, nll


def fit_model_temperature(
    model: nn.Module, data: ImageData, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[float, float, float]:
    """The temperature that calibrates ``model`` on ``data``'s evaluation split; returns
    (temperature, NLL before, NLL after)."""
    device = next(model.parameters()).device
    labels = data.test_y.to(device)
    logits = evaluate(model, data.test_x.to(device), labels, mean, std, precision="fp32").logits
    labels = labels.cpu()
    t = fit_temperature(logits, labels)
    return t, nll(logits, labels), nll(logits, labels, t)


def calibrate_checkpoint(ckpt: dict, data: ImageData) -> tuple[float, float, float]:
    """Fit ``ckpt``'s temperature on ``data``'s evaluation split; returns (temperature, NLL before, NLL
    after). The checkpoint is not changed."""
    model = model_from_checkpoint(ckpt, data.test_x.device)
    return fit_model_temperature(model, data, tuple(ckpt["mean"]), tuple(ckpt["std"]))
