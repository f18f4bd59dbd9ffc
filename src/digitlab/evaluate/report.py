"""Everything about one evaluated model, in one folder: numbers, confusion matrix, worst errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from digitlab.evaluate.grid import save_image_grid
from digitlab.evaluate.metrics import compute_metrics
from digitlab.evaluate.plots import plot_confusion


def plural(n: int, word: str) -> str:
    """ "1 error", "2 errors"."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _worst_errors(y_true: np.ndarray, probs: np.ndarray, max_errors: int) -> np.ndarray:
    """Indices of misclassified samples, most confidently wrong first."""
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y_true)
    conf = probs[wrong, pred[wrong]]
    return wrong[np.argsort(-conf, kind="stable")][:max_errors]


def write_report(
    out_dir: str | Path,
    y_true,
    probs,
    classes: list[str],
    images_uint8: torch.Tensor,
    *,
    max_errors: int = 36,
    meta: dict | None = None,
) -> dict:
    """Write ``confusion.png``, ``errors.png``, ``report.txt`` and ``eval.json`` to ``out_dir``.

    Args:
        out_dir: folder to write into (created).
        y_true: true class indices (N,), tensor or array.
        probs: predicted class probabilities (N, K), tensor or array.
        classes: the K class names.
        images_uint8: the evaluated images, uint8 (N, C, H, W), for the error grid.
        max_errors: how many misclassified images to show, most confidently wrong first.
        meta: what was evaluated (checkpoint, dataset, loss, ...), put first in the dict and in eval.json
            so that the file alone says what its numbers are about.

    Returns:
        ``meta`` and ``compute_metrics``' dict plus ``n_errors`` and ``worst_errors``
        ([{index, true, pred, p}], the images in errors.png).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = torch.as_tensor(y_true).detach().cpu().numpy().astype(np.int64).ravel()
    pr = torch.as_tensor(probs).detach().cpu().float().numpy()
    if pr.ndim != 2 or pr.shape[0] != t.size:
        raise ValueError(f"probs must be (N, K) with N={t.size}, got {pr.shape}")
    pred = pr.argmax(1)

    metrics = {**(meta or {}), **compute_metrics(t, pred, classes)}
    worst = _worst_errors(t, pr, max_errors)
    metrics["n_errors"] = int((pred != t).sum())
    metrics["worst_errors"] = [
        {"index": int(i), "true": classes[t[i]], "pred": classes[pred[i]], "p": round(float(pr[i, pred[i]]), 4)}
        for i in worst
    ]

    plot_confusion(np.asarray(metrics["confusion"]), classes, out / "confusion.png")
    images = torch.as_tensor(images_uint8).detach().cpu()
    idx = torch.as_tensor(worst, dtype=torch.long)
    save_image_grid(
        images[idx],
        [f"{e['true']}→{e['pred']} ({e['p']:.2f})" for e in metrics["worst_errors"]],
        out / "errors.png",
        title=f"{len(worst)} most confident of {plural(metrics['n_errors'], 'error')} (true→pred (p))",
        title_colors=["firebrick"] * len(worst),
    )
    (out / "report.txt").write_text(format_report(metrics) + "\n", encoding="utf-8")
    (out / "eval.json").write_text(
        json.dumps(metrics, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    return metrics


def format_report(metrics: dict) -> str:
    """Plain-text summary of ``compute_metrics``' dict for the terminal and report.txt."""
    lines = [
        f"accuracy {metrics['accuracy']:.4f} on {metrics['n']} samples"
        + (f" of {metrics['dataset']}" if metrics.get("dataset") else "")
        + (f" ({plural(metrics['n_errors'], 'error')})" if "n_errors" in metrics else ""),
        f"macro precision {metrics['macro_precision']:.4f}  recall {metrics['macro_recall']:.4f}"
        f"  F1 {metrics['macro_f1']:.4f}",
        "",
        metrics["report_text"].rstrip(),
        "",
        "most confused (true → predicted: count):",
    ]
    pairs = metrics["most_confused"]
    lines += [f"  {p['true']} → {p['pred']}: {p['count']}" for p in pairs] or ["  (none)"]
    cal = metrics.get("calibration")
    if cal:
        line = f"calibration: NLL {cal['nll']:.4f}, ECE {cal['ece']:.4f}"
        if cal.get("temperature"):
            line += (
                f"; with temperature {cal['temperature']:.3f} (as predict reports): NLL {cal['nll_calibrated']:.4f}, "
                f"ECE {cal['ece_calibrated']:.4f}"
            )
        lines += ["", line]
    return "\n".join(lines)
