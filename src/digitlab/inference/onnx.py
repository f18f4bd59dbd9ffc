"""The onnxruntime model that `predict` and `serve` run from a file of `digitlab export --format onnx`.

The exported graph takes ``image``: float32 ``(N, C, H, W)`` pixel values in [0, 1] (uint8 / 255,
channels in the checkpoint's order: gray, or RGB), with the checkpoint's normalisation folded into
the graph, and returns ``logits`` ``(N, classes)``; probabilities are ``softmax(logits / temperature)``.
Everything else a deployment needs sits in the model's metadata: ``classes`` (JSON list),
``temperature``, ``image_size``, ``channels``, ``task``, and ``digitlab`` (all of it as one JSON
object, with what `digitlab eval model.onnx` needs besides: the training's final TTA and how its
data was loaded). ``Predictor.load("model.onnx")`` reads that metadata and runs the graph in
onnxruntime behind the same preprocessing as a checkpoint.

Running a model needs only onnxruntime, a base requirement (and numpy, Pillow, SciPy for the
preprocessing): neither torch nor ``onnx``. ``onnx``, the optional extra ``digitlab[onnx]``, is
imported only when an ONNX file is written.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from digitlab.errors import DigitlabError

INPUT_NAME = "image"  # float32 (N, C, H, W) in [0, 1]
OUTPUT_NAME = "logits"  # float32 (N, classes)
METADATA_FORMAT = 1  # the "digitlab" metadata entry's layout


_threads: int | None = None  # set by ``set_threads``


def set_threads(n: int) -> None:
    """Threads for the model runtime in this process: onnxruntime sessions created after this call,
    torch now where it is loaded, and a PyTorch model the predictor loads later (``thread_setting``).
    ``serve`` runs one per prediction process. Imports no torch."""
    global _threads
    _threads = n
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def thread_setting() -> int | None:
    """What ``set_threads`` set in this process, or None."""
    return _threads


def runtime_threads() -> int:
    """Threads for onnxruntime: ``set_threads``'s, else torch's where torch is loaded, else this process's
    cores. Read without importing torch: an ONNX deployment may not have it."""
    if _threads is not None:
        return _threads
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


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
    created on the first call with ``runtime_threads()`` threads (one per process in `serve`).
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
                opts.intra_op_num_threads = runtime_threads()
                opts.inter_op_num_threads = 1
                self._session = ort.InferenceSession(self.data, opts, providers=["CPUExecutionProvider"])
            return self._session

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for float32 inputs (N, C, H, W) in [0, 1]."""
        arr = np.ascontiguousarray(x, dtype=np.float32)
        return self._get_session().run([OUTPUT_NAME], {INPUT_NAME: arr})[0]

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
    require("onnxruntime")
    p = Path(path)
    if not p.is_file():
        raise DigitlabError(f"ONNX model not found: {p}")
    model = OnnxModel(p.read_bytes())
    try:
        # onnxruntime reads the metadata too: the onnx package (0.5 s to import) is needed only to export
        props = dict(model._get_session().get_modelmeta().custom_metadata_map)
    except Exception as exc:  # InvalidProtobuf, Fail and friends: not an ONNX file onnxruntime can run
        raise DigitlabError(f"{p} is not a readable ONNX model ({type(exc).__name__})") from exc
    if "digitlab" not in props:
        raise DigitlabError(f"{p} has no digitlab metadata; export it with `digitlab export RUN --format onnx`")
    try:
        meta = json.loads(props["digitlab"])
        channels = int(meta["channels"])
        fields = {
            "model_name": str(meta["model_name"]),
            "model_args": dict(meta.get("model_args") or {}),
            "dataset": meta.get("dataset"),
            "dataset_note": meta.get("dataset_note"),
            "task": meta.get("task"),
            "classes": [str(c) for c in meta["classes"]],
            "channels": channels,
            "image_size": int(meta["image_size"]),
            "mean": [0.0] * channels,  # the graph normalises: it takes pixels in [0, 1]
            "std": [1.0] * channels,
            "metrics": dict(meta.get("metrics") or {}),
            "format": "onnx",
            "checkpoint_digest": meta.get("checkpoint_digest"),
            # for `digitlab eval model.onnx`: the training's final TTA and how its data was loaded
            "final_tta": bool(meta.get("final_tta", False)),
            "config": {"data": dict(meta.get("data") or {})},
        }
        if meta.get("temperature") is not None:
            fields["temperature"] = float(meta["temperature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DigitlabError(f"{p}: its digitlab metadata is malformed ({type(exc).__name__}: {exc})") from exc
    return model, fields
