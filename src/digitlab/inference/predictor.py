"""Read digits (or classify images) with a trained checkpoint: what the CLI and the web app call.

``Predictor.load`` rebuilds the model once; ``predict`` runs one image through
``digitlab.inference.preprocess`` and the model; ``predict_many`` does the same for many
files with the model calls batched across files. Problems with one file (unreadable,
too large) become a ``Prediction`` with ``status="error"``, never an exception.

Everything around the model call is numpy: torch is imported only to load and run a PyTorch
checkpoint, so a ``.onnx`` model (onnxruntime) reads images where torch is not installed.
"""

from __future__ import annotations

import base64
import io
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from digitlab.engine.limits import check_temperature
from digitlab.engine.slim import INFERENCE_KEYS, slim_checkpoint
from digitlab.errors import DigitlabError
from digitlab.inference.image import load_image
from digitlab.inference.numbers import JOIN_COST, SPLIT_COST, _best_reading, _Prepared
from digitlab.inference.onnx import OnnxModel, is_onnx_path, load_onnx
from digitlab.inference.preprocess import generic_image, normalize_array, preprocess_digits
from digitlab.naming import dataset_label

if TYPE_CHECKING:
    import torch

UNCERTAIN_BELOW = 0.6  # a top probability under this is flagged as uncertain ...
CALIBRATED_UNCERTAIN_BELOW = 0.95  # ... or under this, for a calibrated checkpoint (`digitlab export`):
# label smoothing caps an uncalibrated model near 0.91, so 0.6 there and 0.95 calibrated flag about
# the same handwriting misreads (BENCHMARKS.md)
DEFAULT_MODEL = "default.pt"  # the shipped model, in digitlab/assets/ ...
DEFAULT_ONNX = "default.onnx"  # ... and the same weights as an ONNX graph (`digitlab export --as-default` writes both)
DIGIT_CLASSES = [str(i) for i in range(10)]


@dataclass
class DigitPrediction:
    """One recognised digit (or, for image models, the one class of the whole image)."""

    label: str  # the class name: "7", or "cat" for an image model
    index: int  # its class index
    probability: float
    probs: list[float]  # every class, in class order
    top_k: list[tuple[str, float]]  # the k most likely (label, probability), best first
    box: tuple[int, int, int, int] | None  # (left, top, right, bottom) in the original image; None for image models
    uncertain: bool  # probability under the predictor's threshold (uncertain_below)
    input_image: np.ndarray | None = None  # uint8 (H, W) or (H, W, 3): exactly what the model saw

    def to_dict(self, include_input: bool = False) -> dict:
        d = {
            "label": self.label,
            "index": self.index,
            "probability": round(self.probability, 6),
            "probs": [round(p, 6) for p in self.probs],
            "top_k": [{"label": lab, "probability": round(p, 6)} for lab, p in self.top_k],
            "box": list(self.box) if self.box is not None else None,
            "uncertain": self.uncertain,
        }
        if include_input:
            d["input_image"] = png_data_url(self.input_image) if self.input_image is not None else None
        return d


@dataclass
class Prediction:
    """The answer for one image."""

    source: str  # the file name, or "<image>" / "<bytes>"
    status: str  # "ok" | "uncertain" | "empty" (no digit found) | "error"
    text: str | None  # "2024", "7", a class name; None when empty or on error
    items: list[DigitPrediction] = field(default_factory=list)  # one per digit, left to right
    error: str | None = None
    elapsed_ms: float = 0.0

    def to_dict(self, include_input: bool = False) -> dict:
        """JSON-ready; the model's input images as PNG data URLs when ``include_input``."""
        return {
            "source": self.source,
            "status": self.status,
            "text": self.text,
            "items": [it.to_dict(include_input) for it in self.items],
            "error": self.error,
            "elapsed_ms": round(self.elapsed_ms, 3),
        }


def png_data_url(image: np.ndarray) -> str:
    """A uint8 array as a ``data:image/png;base64,...`` URL (for JSON and the web page)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def default_model_path(must_exist: bool = True) -> Path:
    """The shipped default model; a clear error if the package was installed without it."""
    ref = resources.files("digitlab") / "assets" / DEFAULT_MODEL
    if must_exist and not ref.is_file():
        raise DigitlabError(
            f"the default model ({DEFAULT_MODEL}) is missing from this installation; "
            "pass a checkpoint with --model, or train one with `digitlab train`"
        )
    return Path(str(ref))  # the package is installed as files (setuptools, editable or not)


def default_onnx_path() -> Path | None:
    """The shipped model's ONNX twin when it is installed and onnxruntime can be imported; else None.

    Why: ``predict`` and ``serve`` run the shipped model in onnxruntime, which starts without torch's
    import (about 1 s) and holds about a third of its memory per prediction process; the answers are
    the PyTorch model's (logits within 1e-4, tests/test_onnx.py).
    """
    ref = resources.files("digitlab") / "assets" / DEFAULT_ONNX
    if not ref.is_file():
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:  # a platform without onnxruntime wheels: the PyTorch checkpoint serves
        return None
    return Path(str(ref))


def _source_name(image) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, (bytes, bytearray)):
        return "<bytes>"
    return "<image>"


class Predictor:
    """A loaded model plus the preprocessing its checkpoint asks for."""

    def __init__(self, model: torch.nn.Module | OnnxModel, ckpt: dict, device: str | torch.device = "cpu"):
        self.model: Any
        if isinstance(model, OnnxModel):  # folded at export; takes its input as it comes
            self.model, self.device = model, None
        else:
            # channels_last: oneDNN's convolutions skip a layout reorder, so the shipped model's forward at
            # batch 1-2 on one CPU thread is shorter, outputs equal to ~1e-6. BatchNorms folded into the convs
            # shorten it again (fold_batchnorm; the caller's model is not changed). BENCHMARKS.md has the latency.
            import torch

            from digitlab.inference.fold import fold_batchnorm
            from digitlab.inference.onnx import thread_setting

            if (threads := thread_setting()) is not None:  # set_threads came before torch was loaded (serve)
                torch.set_num_threads(threads)
            self.model = fold_batchnorm(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.device = torch.device(device)
        self.classes: list[str] = list(ckpt["classes"])
        self.channels = int(ckpt["channels"])
        self.image_size = int(ckpt["image_size"])
        self.mean = tuple(float(m) for m in ckpt["mean"])
        self.std = tuple(float(s) for s in ckpt["std"])
        # Reported probabilities are softmax(logits / temperature), calibrated where `digitlab export`
        # fitted it; the segmentation still weighs readings with the model's own (temperature 1).
        self.temperature = check_temperature(ckpt.get("temperature", 1.0))  # finite and > 0, or DigitlabError
        self.uncertain_below = CALIBRATED_UNCERTAIN_BELOW if "temperature" in ckpt else UNCERTAIN_BELOW
        task = ckpt.get("task")
        if task not in ("digits", "images"):
            task = "digits" if self.channels == 1 and self.classes == DIGIT_CLASSES else "images"
        self.task: str = task
        metrics = ckpt.get("metrics") or {}
        accuracy = metrics.get("test_acc", metrics.get("accuracy"))
        self.info: dict = {
            "name": ckpt["model_name"],
            "classes": self.classes,
            "task": self.task,
            "channels": self.channels,
            "image_size": self.image_size,
            "accuracy": float(accuracy) if accuracy is not None else None,
            "dataset": dataset_label(ckpt.get("dataset"), ckpt.get("dataset_note")),
            "temperature": self.temperature if "temperature" in ckpt else None,
        }

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str = "cpu", *, runtime: str = "auto") -> Predictor:
        """Load a checkpoint (a file or a run folder), or a ``.onnx`` file of `digitlab export --format onnx`
        (run by onnxruntime); None loads the shipped default model.

        Args:
            runtime: for the shipped model only: ``auto`` runs its ONNX twin in onnxruntime on the CPU
                where it can (``default_onnx_path``), ``torch`` the PyTorch checkpoint (gradients, for
                ``--explain``; a GPU).

        Raises:
            DigitlabError: missing or invalid checkpoint.
        """
        if runtime not in ("auto", "torch"):
            raise DigitlabError(f"unknown runtime {runtime!r}; choose auto or torch")
        twin = default_onnx_path() if checkpoint is None and runtime == "auto" and str(device) == "cpu" else None
        path = twin or (default_model_path() if checkpoint is None else checkpoint)
        if is_onnx_path(path):
            onnx_model, fields = load_onnx(path)
            return cls(onnx_model, fields, "cpu")  # onnxruntime's CPU provider
        from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint

        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt, device)
        return cls(model, ckpt, device)

    # -- the two halves of a prediction -------------------------------------------------

    def _prepare(self, image, multi: bool) -> _Prepared:
        """Decode and preprocess one image. Raises DigitlabError for unreadable input."""
        t0 = time.perf_counter()
        source = _source_name(image)
        img = image if isinstance(image, Image.Image) else load_image(image)
        if self.task != "digits":
            arr = generic_image(img, channels=self.channels, image_size=self.image_size)
            x = normalize_array(arr, self.mean, self.std)[None]
            return _Prepared(source, x, [arr], [None], (time.perf_counter() - t0) * 1000, n_main=1)
        found = preprocess_digits(
            img, mean=self.mean, std=self.std, multi=multi, image_size=self.image_size, lazy=True
        )  # cuts and joins: only those the model's reading needs (add_offers)
        rows = found.digits
        ms = (time.perf_counter() - t0) * 1000
        return _Prepared(
            source, found.array, [r.image for r in rows], [r.box for r in rows], ms, len(rows), digits=list(rows)
        )

    def _logits(self, x: np.ndarray) -> np.ndarray:
        """One model call: float32 logits (N, classes) for float32 inputs (N, C, H, W)."""
        if self.device is None:  # onnxruntime
            return np.asarray(self.model(x), dtype=np.float32)
        import torch

        from digitlab.inference.fold import _channels_last

        with torch.inference_mode():
            out = self.model(_channels_last(torch.from_numpy(x).to(self.device)))
            return out.float().cpu().numpy()

    def _probabilities(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The model's own softmax probabilities (N, classes; uncalibrated) for a batch of inputs, in chunks."""
        if x.shape[0] == 0:
            return np.empty((0, len(self.classes)), dtype=np.float32)
        logits = np.concatenate([self._logits(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        if not np.isfinite(logits).all():  # NaN never reaches an answer (nor JSON, which has no NaN)
            raise DigitlabError("the model's output is NaN or infinite for this image; its checkpoint is broken")
        return _softmax(logits)

    def _result(self, prep: _Prepared, probs: np.ndarray, top_k: int, model_ms: float) -> Prediction:
        k = max(1, min(top_k, len(self.classes)))
        raw_logp = [math.log(max(float(p.max()), 1e-12)) for p in probs]  # the segmentation's scale
        if self.temperature != 1.0:  # softmax(log p / T) == softmax(logits / T): the softmax's constant cancels
            probs = _softmax(np.log(np.maximum(probs, 1e-30)) / np.float32(self.temperature))
        read = []
        for p, img, box in zip(probs, prep.images, prep.boxes, strict=True):
            best = np.argsort(-p, kind="stable")[:k]  # ties keep class order, as torch.topk does on CPU
            index = int(best[0])
            probability = float(p[index])
            read.append(
                DigitPrediction(
                    label=self.classes[index],
                    index=index,
                    probability=probability,
                    probs=[float(v) for v in p],
                    top_k=[(self.classes[int(i)], float(p[i])) for i in best],
                    box=box,
                    uncertain=probability < self.uncertain_below,
                    input_image=img,
                )
            )
        items = _best_reading(read, prep, raw_logp)
        elapsed = prep.ms + model_ms
        if not items:
            return Prediction(prep.source, "empty", None, [], None, elapsed)
        text = "".join(it.label for it in items) if self.task == "digits" else items[0].label
        status = "uncertain" if any(it.uncertain for it in items) else "ok"
        return Prediction(prep.source, status, text, items, None, elapsed)

    # -- public -----------------------------------------------------------------------

    def predict(
        self,
        image: Image.Image | bytes | str | Path,
        *,
        top_k: int = 3,
        multi: bool = True,
        include_input: bool = False,
    ) -> Prediction:
        """Read one image: a PIL image, encoded bytes, or a path.

        Args:
            image: the input; bytes and paths go through ``load_image`` (safe decoding).
            top_k: how many best classes each item lists.
            multi: read a row of digits as a number; False reads all ink as one digit.
            include_input: accepted for symmetry with ``Prediction.to_dict``; the model's
                input image (28x28 uint8, tiny) is always on each item as ``input_image``,
                and ``to_dict(include_input=True)`` puts it in the JSON.

        Returns:
            A ``Prediction``; unreadable input gives ``status="error"`` rather than an exception.
        """
        return self.predict_many([image], top_k=top_k, multi=multi)[0]

    def predict_many(
        self,
        sources: list,
        *,
        top_k: int = 3,
        multi: bool = True,
        batch_size: int = 256,
    ) -> list[Prediction]:
        """Read many images with the model calls batched across them; one ``Prediction`` each, in order."""
        prepared: list[_Prepared | Prediction] = []
        for src in sources:
            t0 = time.perf_counter()
            try:
                prepared.append(self._prepare(src, multi))
            except Exception as exc:  # one bad file must not stop the others
                msg = (
                    str(exc)
                    if isinstance(exc, DigitlabError)
                    else f"cannot process image ({type(exc).__name__}: {exc})"
                )
                ms = (time.perf_counter() - t0) * 1000
                prepared.append(Prediction(_source_name(src), "error", None, [], msg, ms))
        ok = [p for p in prepared if isinstance(p, _Prepared)]
        t0 = time.perf_counter()
        probs = self._batched([p.x for p in ok], batch_size)
        model_ms = (time.perf_counter() - t0) * 1000
        # Second round, digit models only: the cuts and joins that could still change a reading.
        extra = [p.add_offers(pr) if p.digits else None for p, pr in zip(ok, probs, strict=True)]
        if any(e is not None for e in extra):  # most images (a confident canvas) need no second call
            t1 = time.perf_counter()
            more = self._batched([e if e is not None else p.x[:0] for p, e in zip(ok, extra, strict=True)], batch_size)
            model_ms += (time.perf_counter() - t1) * 1000
            for i, (p, e) in enumerate(zip(ok, extra, strict=True)):
                if e is not None:
                    p.x = np.concatenate([p.x, e])
                    probs[i] = np.concatenate([probs[i], more[i]])
        n_total = max(1, sum(p.x.shape[0] for p in ok))
        read = iter(probs)  # in the order of ``ok``
        results: list[Prediction] = []
        for item in prepared:
            if isinstance(item, Prediction):
                results.append(item)
                continue
            n = item.x.shape[0]
            results.append(self._result(item, next(read), top_k, model_ms * n / n_total))
        return results

    def _batched(self, xs: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
        """Probabilities for each image's rows, with one batched model call across all images."""
        rows = [x for x in xs if x.shape[0]]
        probs = self._probabilities(np.concatenate(rows) if rows else np.empty((0, 1, 1, 1), np.float32), batch_size)
        return np.split(probs, np.cumsum([x.shape[0] for x in xs])[:-1])


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32 (as ``torch.softmax`` computes it: shifted by the row's maximum)."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


__all__ = [  # with the names that moved to engine.slim and inference.numbers, importable here as before
    "CALIBRATED_UNCERTAIN_BELOW",
    "DEFAULT_MODEL",
    "DEFAULT_ONNX",
    "INFERENCE_KEYS",
    "JOIN_COST",
    "SPLIT_COST",
    "UNCERTAIN_BELOW",
    "DigitPrediction",
    "Prediction",
    "Predictor",
    "default_model_path",
    "default_onnx_path",
    "png_data_url",
    "slim_checkpoint",
]
