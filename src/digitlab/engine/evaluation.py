"""Evaluation: a model's logits on a split, and the one evaluation that `digitlab train` and
`digitlab eval` both report (fp32, one ``eval.json`` schema).

Training's per-epoch evaluations run in the training precision (they are part of the timed loop);
the reported accuracy is always computed in fp32, so `train` and `eval` print the same number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from digitlab.data.base import ImageData
from digitlab.data.loader import normalize
from digitlab.engine.device import autocast
from digitlab.evaluate.calibration import calibration_summary
from digitlab.evaluate.report import write_report
from digitlab.naming import dataset_label

# The keys every eval.json starts with, in this order; compute_metrics' keys (accuracy, per_class, ...) follow.
EVAL_KEYS = ("checkpoint", "epoch", "dataset", "tta", "loss", "calibration")


@dataclass
class EvalOutput:
    loss: float
    accuracy: float
    logits: torch.Tensor  # float32 (N, K) on CPU


def tta_views(x: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
    """Test-time augmentation: (view, weight) pairs whose weights sum to 1.

    Colour images: airbench's six views, the image and its mirror (half the weight) and both moved by
    one pixel up-left and down-right with mirrored borders (a quarter each way). Digits: the image and
    its four one-pixel shifts with black borders (no mirror: a mirrored 2 is no digit), equal weights. ``x``
    is pixels (0..255), so a zero border is black, as the training's shifts on uint8 make it.
    """
    h, w = x.shape[-2:]
    if x.shape[1] == 3:
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        moved = [padded[..., :h, :w], padded[..., 2 : 2 + h, 2 : 2 + w]]
        return [(x, 0.25), (x.flip(-1), 0.25)] + [(v, 0.125) for m in moved for v in (m, m.flip(-1))]
    padded = F.pad(x, (1, 1, 1, 1))
    shifts = [padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
    return [(v, 0.2) for v in [x, *shifts]]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    batch_size: int = 1000,
    precision: str = "fp32",
    tta: bool = False,
    channels_last: bool = False,
) -> EvalOutput:
    """Loss, accuracy and logits of ``model`` on uint8 images ``x`` with labels ``y``."""
    model.eval()
    device = x.device
    chunks = []
    for start in range(0, x.shape[0], batch_size):
        # Views are cut from the pixels, then normalised: a shifted digit's new border is black, as the
        # training's shifts (on uint8) make it, and as a model that takes pixels (ONNX) sees it.
        pixels = x[start : start + batch_size].float()  # (B, C, H, W) in 0..255
        logits = torch.zeros(0)
        for i, (view, weight) in enumerate(tta_views(pixels) if tta else [(pixels, 1.0)]):
            xb = normalize(view, mean, std)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                out = model(xb).float() * weight
            logits = out if i == 0 else logits + out
        chunks.append(logits)
    logits = torch.cat(chunks) if chunks else torch.zeros(0, 1, device=device)
    loss = F.cross_entropy(logits, y).item() if len(y) else float("nan")
    acc = (logits.argmax(1) == y).sum().item() / len(y) if len(y) else float("nan")  # exact: the count / N
    return EvalOutput(loss, acc, logits.cpu())


class OnnxModule(nn.Module):
    """An exported ONNX model (``inference.onnx.OnnxModel``) behind a module's call, so `digitlab eval
    model.onnx` evaluates it with the checkpoint's code: float inputs in, logits out, on the CPU.
    Its inputs are pixels in [0, 1] (evaluate it with mean 0 and std 1, as ``load_onnx`` says)."""

    def __init__(self, onnx_model) -> None:
        super().__init__()
        self.onnx_model = onnx_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.onnx_model(x.detach().float().cpu().numpy()))


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live; the CPU for one without any (``OnnxModule``)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def default_eval_dir(checkpoint: Path) -> Path:
    """Where `digitlab eval` writes unless told: ``eval-<checkpoint name>/`` beside a run's checkpoint, so
    training's own report.txt, eval.json and errors.png stay as they are; in the current folder for a
    checkpoint outside a run directory (one inside the installed package, say)."""
    if (checkpoint.parent / "config.json").exists():
        return checkpoint.parent / f"eval-{checkpoint.stem}"
    return Path.cwd() / f"eval-{checkpoint.stem}"


def final_evaluation(
    model: nn.Module, data: ImageData, mean: tuple[float, ...], std: tuple[float, ...], *, tta: bool
) -> EvalOutput:
    """The evaluation whose accuracy is reported: fp32, on ``model``'s device."""
    device = model_device(model)
    return evaluate(model, data.test_x.to(device), data.test_y.to(device), mean, std, precision="fp32", tta=tta)


def report_evaluation(
    res: EvalOutput,
    data: ImageData,
    *,
    tta: bool,
    temperature: float | None,
    out_dir: str | Path,
    checkpoint: str,
    epoch: int | None,
    dataset: str | None = None,
) -> dict:
    """Write the final evaluation ``res`` of a model on ``data``'s evaluation split as eval.json,
    report.txt, confusion.png and errors.png into ``out_dir`` (eval.json last); returns eval.json's dict.

    The error ranking uses the probabilities `digitlab predict` shows (divided by ``temperature``).
    """
    labels = data.test_y.cpu()
    meta = {
        "checkpoint": checkpoint,
        "epoch": epoch,
        "dataset": dataset_label(dataset or data.name, data.note),  # "cifar10 (JPEG q75 copy)"
        "tta": tta,
        "loss": res.loss,
        "calibration": calibration_summary(res.logits, labels, temperature),
    }
    probs = (res.logits / (temperature or 1.0)).softmax(1)
    return write_report(out_dir, labels, probs, data.classes, data.test_x.cpu(), meta=meta)
