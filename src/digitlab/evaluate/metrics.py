"""Classification metrics from labels and predictions, computed by scikit-learn."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a).astype(np.int64).ravel()


def most_confused(cm: np.ndarray, classes: list[str], top: int = 5) -> list[dict]:
    """The ``top`` largest off-diagonal cells of a confusion matrix, largest first.

    Ties keep row-major order (by true class, then predicted class); empty cells are left out.
    """
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    order = np.argsort(-flat, kind="stable")[:top]  # stable: ties in row-major order
    k = cm.shape[0]
    return [{"true": classes[i // k], "pred": classes[i % k], "count": int(flat[i])} for i in order if flat[i] > 0]


def compute_metrics(y_true, y_pred, classes: list[str]) -> dict:
    """Accuracy, macro precision/recall/F1, per-class report, confusion matrix, most-confused pairs.

    Args:
        y_true: true class indices, numpy array or tensor of shape (N,).
        y_pred: predicted class indices, same shape.
        classes: class names; index i is ``classes[i]``.

    Returns:
        A JSON-serialisable dict: ``n``, ``accuracy``, ``macro_precision``, ``macro_recall``,
        ``macro_f1``, ``per_class`` ({name: {precision, recall, f1-score, support}}),
        ``report_text``, ``confusion`` (rows: true class, columns: predicted), ``most_confused``
        ([{true, pred, count}], at most 5) and ``classes``. Macro averages are over the
        classes that occur in ``y_true`` or ``y_pred`` (scikit-learn's default), so a
        test subset that lacks a class is not penalised for it.
    """
    t, p = _as_numpy(y_true), _as_numpy(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    labels = list(range(len(classes)))
    prec, rec, f1, _ = precision_recall_fscore_support(t, p, average="macro", zero_division=0)
    report_dict = classification_report(t, p, labels=labels, target_names=classes, output_dict=True, zero_division=0)
    report_text = classification_report(t, p, labels=labels, target_names=classes, digits=4, zero_division=0)
    cm = confusion_matrix(t, p, labels=labels)
    per_class = {
        name: {k: (int(v) if k == "support" else float(v)) for k, v in report_dict[name].items()} for name in classes
    }
    return {
        "n": int(t.size),
        "accuracy": float(accuracy_score(t, p)) if t.size else 0.0,
        "macro_precision": float(prec),
        "macro_recall": float(rec),
        "macro_f1": float(f1),
        "per_class": per_class,
        "report_text": report_text,
        "confusion": cm.tolist(),
        "most_confused": most_confused(cm, classes),
        "classes": list(classes),
    }
