"""compute_metrics against hand-computed numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from digitlab.evaluate.metrics import compute_metrics, most_confused

# 3 classes, 2 samples each. Confusion (rows true, columns predicted):
#   a: [1, 1, 0]   b: [0, 2, 0]   c: [1, 0, 1]
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]
CLASSES = ["a", "b", "c"]


def test_toy_three_classes():
    m = compute_metrics(np.array(Y_TRUE), np.array(Y_PRED), CLASSES)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # precision: a 1/2, b 2/3, c 1/1; recall: a 1/2, b 2/2, c 1/2
    assert m["per_class"]["a"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["c"]["precision"] == pytest.approx(1.0)
    assert m["per_class"]["b"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["c"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["f1-score"] == pytest.approx(0.8)  # 2 * (2/3 * 1) / (2/3 + 1)
    assert m["per_class"]["a"]["support"] == 2
    assert m["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["macro_recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # Two off-diagonal cells with one sample each, in row-major order.
    assert m["most_confused"] == [{"true": "a", "pred": "b", "count": 1}, {"true": "c", "pred": "a", "count": 1}]
    assert "macro avg" in m["report_text"] and "0.6667" in m["report_text"]
    assert m["classes"] == CLASSES


def test_tensor_inputs_match_numpy():
    a = compute_metrics(torch.tensor(Y_TRUE), torch.tensor(Y_PRED), CLASSES)
    b = compute_metrics(np.array(Y_TRUE), np.array(Y_PRED), CLASSES)
    assert a == b


def test_json_serialisable():
    m = compute_metrics(Y_TRUE, Y_PRED, CLASSES)
    assert json.loads(json.dumps(m)) == m


def test_perfect_predictions():
    m = compute_metrics([0, 1, 2, 1], [0, 1, 2, 1], CLASSES)
    assert m["accuracy"] == m["macro_precision"] == m["macro_recall"] == m["macro_f1"] == 1.0
    assert m["most_confused"] == []


def test_most_confused_order_and_top5():
    cm = np.array(
        [
            [9, 3, 0, 0],
            [7, 9, 1, 2],
            [0, 5, 9, 4],
            [6, 0, 2, 9],
        ]
    )
    pairs = most_confused(cm, ["w", "x", "y", "z"])
    assert [(p["true"], p["pred"], p["count"]) for p in pairs] == [
        ("x", "w", 7),
        ("z", "w", 6),
        ("y", "x", 5),
        ("y", "z", 4),
        ("w", "x", 3),
    ]


def test_class_absent_from_test_set():
    # Class "d" never occurs: it has a row of zeros and does not drag the macro averages down.
    m = compute_metrics(Y_TRUE, Y_PRED, CLASSES + ["d"])
    assert m["per_class"]["d"]["support"] == 0
    assert m["confusion"][3] == [0, 0, 0, 0]
    assert m["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)


def test_length_mismatch():
    with pytest.raises(ValueError):
        compute_metrics([0, 1], [0], CLASSES)
