"""The onnxruntime model that `predict` and `serve` run from a file of `digitlab export --format onnx`.

The exported graph takes ``image``: float32 ``(N, C, H, W)`` pixel values in [0, 1] (uint8 / 255,
channels in the checkpoint's order: gray, or RGB), with the checkpoint's normalisation folded into
the graph, and returns ``logits`` ``(N, classes)``; probabilities are ``softmax(logits / temperature)``.
Everything else a deployment needs sits in the model's metadata: ``classes`` (JSON list),
``temperature``, ``image_size``, ``channels``, ``task``, and ``digitlab`` (all of it as one JSON
object). ``Predictor.load("model.onnx")`` reads that metadata and runs the graph in onnxruntime
behind the same preprocessing as a checkpoint.

``onnx`` and ``onnxruntime`` are the optional extra ``digitlab[onnx]``: they are imported only
when an ONNX file is written or run, so everything else works without them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch

from digitlab.errors import DigitlabError

INPUT_NAME = "image"  # float32 (N, C, H, W) in [0, 1]
OUTPUT_NAME = "logits"  # float32 (N, classes)
METADATA_FORMAT = 1  # the "digitlab" metadata entry's layout


def require(module: str):
    """Import an optional dependency, or say how to install it."""
    try:
        return __import__(module)
    except ImportError as exc:
        raise DigitlabError(f"ONNX needs the {module} package: pip install 'digitlab[onnx]'") from exc


def is_onnx_path(path: str | Path) -> bool:
    """True for a path that names an ONNX file (``.onnx``), which the predictor runs in onnxruntime."""
    return Path(path).suffix.lower() == ".onnx"


class OnnxModel:
    """An ONNX graph run by onnxruntime, called like the PyTorch model: a batch of inputs to logits.

    Inputs are pixels in [0, 1] (the predictor gives it ``normalize`` with mean 0 and std 1). It
    pickles as the model's bytes, so `serve`'s prediction processes each start their own session,
    created on the first call with as many threads as torch has there (one per process in `serve`).
    """

    def __init__(self, data: bytes):
        self.data = data
        self._session = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"data": self.data}

    def __setstate__(self, state: dict) -> None:
        self.data = state["data"]
        self._session = None
        self._lock = threading.Lock()

    def _get_session(self):
        with self._lock:
            if self._session is None:
                ort = require("onnxruntime")
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = torch.get_num_threads()
                opts.inter_op_num_threads = 1
                self._session = ort.InferenceSession(self.data, opts, providers=["CPUExecutionProvider"])
            return self._session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)  # channels_last -> NCHW
        return torch.from_numpy(self._get_session().run([OUTPUT_NAME], {INPUT_NAME: arr})[0])

    # The predictor treats its model as a module: these make the calls it makes harmless.
    def to(self, *args, **kwargs) -> OnnxModel:
        return self

    def eval(self) -> OnnxModel:
        return self


def load_onnx(path: str | Path) -> tuple[OnnxModel, dict]:
    """An exported model and the checkpoint-like fields the predictor reads (mean 0, std 1: pixels in [0, 1]).

    Raises:
        DigitlabError: the file is missing, is not ONNX, or was not written by `digitlab export --format onnx`.
    """
    onnx = require("onnx")
    p = Path(path)
    if not p.is_file():
        raise DigitlabError(f"ONNX model not found: {p}")
    data = p.read_bytes()
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        raise DigitlabError(f"{p} is not a readable ONNX model ({type(exc).__name__})") from exc
    props = {e.key: e.value for e in proto.metadata_props}
    if "digitlab" not in props:
        raise DigitlabError(f"{p} has no digitlab metadata; export it with `digitlab export RUN --format onnx`")
    try:
        meta = json.loads(props["digitlab"])
        channels = int(meta["channels"])
        fields = {
            "model_name": str(meta["model_name"]),
            "model_args": dict(meta.get("model_args") or {}),
            "dataset": meta.get("dataset"),
            "task": meta.get("task"),
            "classes": [str(c) for c in meta["classes"]],
            "channels": channels,
            "image_size": int(meta["image_size"]),
            "mean": [0.0] * channels,  # the graph normalises: it takes pixels in [0, 1]
            "std": [1.0] * channels,
            "metrics": dict(meta.get("metrics") or {}),
            "format": "onnx",
        }
        if meta.get("temperature") is not None:
            fields["temperature"] = float(meta["temperature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DigitlabError(f"{p}: its digitlab metadata is malformed ({type(exc).__name__}: {exc})") from exc
    return OnnxModel(data), fields
